"""What a study's result says: summaries and trials, metrics, parameter importance."""
