#!/usr/bin/env bash
# Stress the ticket lifecycle: run the kill / SIGTERM / fault-injection tests N times each with a
# second process loading the CPUs (as CI's neighbours do), then the lifecycle's property test with
# RNNTUNE_PROP_EXAMPLES examples (default 200), and print `runs, failures` per test.
#
#   bash scripts/stress-lifecycle.sh 20            # N = 20 rounds
#   STRESS_TESTS="tests/test_queue.py" bash scripts/stress-lifecycle.sh 3
#
# Needs what scripts/test.sh sets up (the .venv, PostgreSQL, pgbouncer, faketime). Exits non-zero
# when any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
examples="${RNNTUNE_PROP_EXAMPLES:-200}"
tests="${STRESS_TESTS:-tests/test_queue.py tests/lifecycle tests/deploy/test_pgbouncer.py}"
out="${STRESS_LOGS:-$(mktemp -d)}"  # each round's log and junit XML stay here for a failure's post-mortem
mkdir -p "$out"
trap 'kill "$hog" 2>/dev/null' EXIT

# One core kept busy for the whole run.
.venv/bin/python -c 'while True: pass' &
hog=$!

for i in $(seq "$rounds"); do
  # shellcheck disable=SC2086  # word splitting of the test list is wanted
  .venv/bin/python -m pytest -q -p no:cacheprovider $tests \
    --deselect tests/lifecycle/test_lifecycle_machine.py::test_lifecycle_invariants_under_random_faults \
    --junitxml="$out/round-$i.xml" >"$out/round-$i.log" 2>&1
  echo "round $i/$rounds: $(tail -n 1 "$out/round-$i.log")"
  grep -E '^(FAILED|ERROR) ' "$out/round-$i.log" || true
done
RNNTUNE_PROP_EXAMPLES="$examples" .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/lifecycle/test_lifecycle_machine.py --junitxml="$out/property.xml" >"$out/property.log" 2>&1
echo "property test ($examples examples): $(tail -n 1 "$out/property.log")"

.venv/bin/python - "$out" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

runs, failures = Counter(), Counter()
for report in sorted(Path(sys.argv[1]).glob("*.xml")):
    for case in ET.parse(report).iter("testcase"):
        if case.find("skipped") is not None:
            continue
        name = f"{case.get('classname')}::{case.get('name')}"
        runs[name] += 1
        failures[name] += case.find("failure") is not None or case.find("error") is not None
width = max(map(len, runs), default=10)
print(f"{'test':<{width}}  runs  failures")
for name in sorted(runs):
    print(f"{name:<{width}}  {runs[name]:>4}  {failures[name]:>8}")
print(f"{'total':<{width}}  {sum(runs.values()):>4}  {sum(failures.values()):>8}")
print(f"logs: {sys.argv[1]}")
sys.exit(1 if sum(failures.values()) else 0)
EOF
