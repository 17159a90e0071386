#!/usr/bin/env bash
# The declared habits (pyproject.toml): ruff lint and ruff format.
# Run by scripts/test.sh, so by CI. Needs the .venv that scripts/_env.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .

