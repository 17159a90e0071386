"""Example rnntune plugins (see pyproject.toml for their entry points)."""
