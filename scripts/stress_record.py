"""The bookkeeping of scripts/stress-lifecycle.sh: one row per run of a test, and the table.

    python scripts/stress_record.py add RUN.xml EXAMPLES SITTING.tsv [RECORD.tsv]
    python scripts/stress_record.py report SITTING.tsv [RECORD.tsv]

A row is ``utc, host, cpus, test, outcome, seconds, examples`` (tab-separated; ``examples`` is how
many hypothesis examples the run drew, 1 for a plain test). ``report`` prints runs and failures
per test over the record (every sitting of the same code) or, without one, over this sitting,
and exits 1 when a run of this sitting failed.
"""

from __future__ import annotations

import csv
import os
import socket
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

FIELDS = ("utc", "host", "cpus", "test", "outcome", "seconds", "examples")


def rows_of(report: Path, examples: int) -> list[dict[str, str]]:
    """One row per test case of a junit XML; a run that wrote none (pytest killed, a collection
    error) is one failed row named after the file, so that it cannot pass unseen."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    base = {"utc": now, "host": socket.gethostname(), "cpus": str(os.cpu_count()), "examples": str(examples)}
    try:
        cases = list(ET.parse(report).iter("testcase"))
    except (OSError, ET.ParseError):
        cases = []
    out = []
    for case in cases:
        if case.find("skipped") is not None:
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        name = f"{case.get('classname')}::{case.get('name')}"
        out.append({**base, "test": name, "outcome": "failed" if failed else "passed", "seconds": case.get("time", "")})
    return out or [{**base, "test": f"(no report: {report.name})", "outcome": "failed", "seconds": ""}]


def append(path: Path, rows: list[dict[str, str]]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, delimiter="\t", lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def report(sitting: Path, record: Path | None) -> int:
    rows = read(record) if record is not None else read(sitting)
    runs, failures, examples = Counter[str](), Counter[str](), Counter[str]()
    for row in rows:
        runs[row["test"]] += 1
        failures[row["test"]] += row["outcome"] == "failed"
        examples[row["test"]] += int(row["examples"])
    days = sorted({(r["utc"][:10], r["host"]) for r in rows})
    print(f"over {'the record ' + str(record) if record else 'this sitting'}: {len(rows)} runs")
    width = max(map(len, runs), default=10)
    print(f"{'test':<{width}}  runs  failures  examples")
    for name in sorted(runs):
        print(f"{name:<{width}}  {runs[name]:>4}  {failures[name]:>8}  {examples[name]:>8}")
    print(f"{'total':<{width}}  {sum(runs.values()):>4}  {sum(failures.values()):>8}")
    print("runs from: " + ", ".join(f"{host} on {day}" for day, host in days))
    return 1 if any(r["outcome"] == "failed" for r in read(sitting)) else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["add"] and len(argv) in (4, 5):
        rows = rows_of(Path(argv[1]), int(argv[2]))
        for target in argv[3:]:
            append(Path(target), rows)
        return 0
    if argv[:1] == ["report"] and len(argv) in (2, 3):
        return report(Path(argv[1]), Path(argv[2]) if len(argv) == 3 else None)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
