"""Uploaded data sets, their checks, and the per-worker cache of loaded data."""
