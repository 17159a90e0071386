"""One trial: its record and recipe, the objective that runs it, command objectives, finalize and re-evaluation."""
