# Sourced by serve.sh and test.sh: make .venv with everything rnntune needs, once.
# torch==2.13.0 goes first: any other version of torch would pull several GB of CUDA wheels
# on machines that have the CPU build at hand; pyproject's range admits 2.13.0.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: rnntune needs Python 3.11+ (found $("$PYTHON" --version 2>&1) at $PYTHON)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
STAMP=.venv/.rnntune-installed
WANT="$(cat pyproject.toml examples/plugin/pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${RNNTUNE_TORCH_VERSION:-2.13.0}"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  # the example plugins (studies/custom-*.yaml and their tests need them installed)
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e examples/plugin
  echo "$WANT" > "$STAMP"
fi
