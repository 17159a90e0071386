#!/usr/bin/env bash
# Stress the ticket lifecycle: run the kill / SIGTERM / fault-injection tests N times each with a
# second process loading the CPUs (as CI's neighbours do), then the lifecycle's property test with
# RNNTUNE_PROP_EXAMPLES examples (default 200) in runs of STRESS_PROP_CHUNK (default 25), each run
# with its own hypothesis seed, and print `runs, failures` per test.
#
#   bash scripts/stress-lifecycle.sh 20            # N = 20 rounds, then 200 examples
#   RNNTUNE_PROP_EXAMPLES=0 bash scripts/stress-lifecycle.sh 4     # rounds only
#   bash scripts/stress-lifecycle.sh 0             # the property test only
#   STRESS_TESTS="tests/test_queue.py" bash scripts/stress-lifecycle.sh 3
#
# On 2 cores a round takes ~11 min and an example ~35 s, so the whole proof (20 rounds, 200
# examples) is ~6 h of machine time: more than one sitting. Every run of a test is recorded in
# benchmarks/results/stress-lifecycle/<code>/runs.tsv, where <code> names the committed service/,
# models/, rnntune/ and tests/ trees and pyproject.toml; runs of the same code add up across
# sittings and machines, and the table printed at the end counts all of them (a change to that
# code starts a new record). With uncommitted changes there nothing is recorded, and the table
# counts this sitting's runs only.
#
# Needs what scripts/test.sh sets up (the .venv, PostgreSQL, pgbouncer, faketime). Exits non-zero
# when any run of this sitting failed; each run's log stays in STRESS_LOGS for a post-mortem.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
examples="${RNNTUNE_PROP_EXAMPLES:-200}"
chunk="${STRESS_PROP_CHUNK:-25}"
tests="${STRESS_TESTS:-tests/test_queue.py tests/lifecycle tests/deploy/test_pgbouncer.py}"
property=tests/lifecycle/test_lifecycle_machine.py::test_lifecycle_invariants_under_random_faults
out="${STRESS_LOGS:-$(mktemp -d)}"
mkdir -p "$out"
code="$(git rev-parse HEAD:service HEAD:models HEAD:rnntune HEAD:tests HEAD:pyproject.toml | sha1sum | cut -c1-12)"
record=""
if [ -z "$(git status --porcelain -- service models rnntune tests pyproject.toml)" ]; then
  record="benchmarks/results/stress-lifecycle/$code"
  mkdir -p "$record"
fi
trap 'kill "$hog" 2>/dev/null' EXIT
echo "code $code ($(git rev-parse --short HEAD)); record: ${record:-none (uncommitted changes)}; logs: $out"

# One core kept busy for the whole run.
.venv/bin/python -c 'while True: pass' &
hog=$!

add() {  # add <junit xml> <examples per run>: this run's rows, to the record and to this sitting's
  .venv/bin/python scripts/stress_record.py add "$1" "$2" "$out/sitting.tsv" ${record:+"$record/runs.tsv"}
}

for i in $(seq "$rounds"); do
  # shellcheck disable=SC2086  # word splitting of the test list is wanted
  .venv/bin/python -m pytest -q -p no:cacheprovider $tests --deselect "$property" \
    --junitxml="$out/round-$i.xml" >"$out/round-$i.log" 2>&1
  add "$out/round-$i.xml" 1
  echo "round $i/$rounds: $(tail -n 1 "$out/round-$i.log")"
  grep -E '^(FAILED|ERROR) ' "$out/round-$i.log" || true
done
left="$examples"
while [ "$left" -gt 0 ]; do
  n=$((left < chunk ? left : chunk))
  seed="$(.venv/bin/python -c 'import secrets; print(secrets.randbelow(2**32))')"
  RNNTUNE_PROP_EXAMPLES="$n" .venv/bin/python -m pytest -q -p no:cacheprovider "$property" \
    --hypothesis-seed="$seed" --junitxml="$out/property-$seed.xml" >"$out/property-$seed.log" 2>&1
  add "$out/property-$seed.xml" "$n"
  echo "property test ($n examples, seed $seed): $(tail -n 1 "$out/property-$seed.log")"
  left=$((left - n))
done

.venv/bin/python scripts/stress_record.py report "$out/sitting.tsv" ${record:+"$record/runs.tsv"}
