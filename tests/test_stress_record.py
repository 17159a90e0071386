"""scripts/stress_record.py: the stress script's runs add up, and a run without a report fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stress_record.py"
JUNIT = """<testsuites><testsuite>
<testcase classname="tests.test_queue" name="test_a" time="1.5"/>
<testcase classname="tests.test_queue" name="test_b" time="2.0"><failure message="boom"/></testcase>
<testcase classname="tests.test_queue" name="test_c" time="0"><skipped/></testcase>
</testsuite></testsuites>"""


def record(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_runs_add_up_over_sittings_and_a_missing_report_is_a_failure(tmp_path):
    xml = tmp_path / "round-1.xml"
    xml.write_text(JUNIT.replace('<failure message="boom"/>', ""))
    rec, first, second = tmp_path / "runs.tsv", tmp_path / "one.tsv", tmp_path / "two.tsv"
    assert record("add", xml, 1, first, rec).returncode == 0
    done = record("report", first, rec)
    assert done.returncode == 0 and "tests.test_queue::test_c" not in done.stdout  # a skip is no run
    xml.write_text(JUNIT)
    assert record("add", xml, 1, second, rec).returncode == 0
    assert record("add", tmp_path / "killed.xml", 25, second, rec).returncode == 0
    table = record("report", second, rec)
    assert table.returncode == 1  # this sitting failed
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines() if line.startswith(("tests.", "("))}
    assert rows["tests.test_queue::test_a"][:2] == ["2", "0"]
    assert rows["tests.test_queue::test_b"][:2] == ["2", "1"]
    assert any(name.startswith("(no") for name in rows)  # the killed run is counted, as failed
    assert record("report", first, rec).returncode == 0  # the first sitting alone had no failure
