#!/usr/bin/env bash
# Quick start, command one: install into .venv, then run the API, the dashboard and one local
# worker on an embedded SQLite database (rnntune-data/), with a demo study submitted.
# Extra arguments go to `rnntune serve` (e.g. --workers 2, --port 8080, --no-demo).
source "$(dirname "$0")/_env.sh"
exec .venv/bin/rnntune serve --demo "$@"
