#!/usr/bin/env bash
# The declared habits (pyproject.toml): ruff lint, ruff format, and mypy (strict on the models package,
# check_untyped_defs on every module of the service).
# Run by scripts/test.sh, so by CI. Needs the .venv that scripts/_env.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .

# mypy does not run setuptools' editable import hook, which maps rnntune.models onto models/ and
# rnntune.service onto service/; lay the package out as the wheel does, with links, and check that.
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/rnntune"
ln -s "$PWD/rnntune/__init__.py" "$tree/rnntune/__init__.py"
ln -s "$PWD/rnntune/reporting.py" "$tree/rnntune/reporting.py"
ln -s "$PWD/models" "$tree/rnntune/models"
ln -s "$PWD/service" "$tree/rnntune/service"
(cd "$tree" && "$OLDPWD/.venv/bin/mypy" --config-file "$OLDPWD/pyproject.toml" --no-error-summary -p rnntune.models -p rnntune.service)
