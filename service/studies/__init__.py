"""Creating, extending, deleting and warm-starting studies."""
