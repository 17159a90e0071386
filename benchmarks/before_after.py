"""Two commits side by side in one run: the queue's overhead and the demo's wall time.

For a change that must not cost speed (a restructuring, a refactor): each side is a detached
worktree of its commit with its own virtual environment (``scripts/_env.sh``), and the runs
alternate (before, after, before, ...) so drifting load hits both alike. Per side and repeat:

- overhead: ``benchmarks/queue_throughput.py --only overhead`` of that side (one rnntune worker
  against plain ``study.optimize``, same database), its ratio per sampler;
- demo: a fresh ``rnntune serve --demo`` of that side on its own SQLite database, the demo study's
  seconds from its first claim to ``done`` (the API's ``started_at`` / ``finished_at``).

Reported: every run, the medians per side and after / before. "Unchanged within noise" reads as
a ratio near 1.0 with the runs of both sides overlapping.

    python benchmarks/before_after.py --before 1229a6f                 # after = HEAD, 3 repeats
    python benchmarks/before_after.py --before 1229a6f --after main --repeats 5 --only demo
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def checkout(rev: str, where: Path) -> Path:
    """A detached worktree of ``rev`` at ``where`` with its own .venv; its python."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    subprocess.run(["bash", "-c", "source scripts/_env.sh"], cwd=where, check=True, capture_output=True)
    return where / ".venv" / "bin" / "python"


def overhead(python: Path, tree: Path) -> dict[str, float]:
    """queue_throughput's overhead table of ``tree``: {sampler: ratio}."""
    out = subprocess.run(
        [str(python), "benchmarks/queue_throughput.py", "--only", "overhead"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {m[1]: float(m[2]) for m in re.finditer(r"^\| (\w+) \| [\d.]+ ms \| [\d.]+ ms \| ([\d.]+)x", out, re.M)}


def demo_seconds(python: Path, tree: Path) -> float:
    """One fresh ``serve --demo`` of ``tree``: the demo study's seconds (serve_workers.run_once)."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import serve_workers as s; "
        "print(s.run_once([], timeout_s=900)['seconds'])"
    )
    out = subprocess.run([str(python), "-c", code], cwd=tree, capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the commit before the change")
    ap.add_argument("--after", default="HEAD", help="the commit after it (default HEAD)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("overhead", "demo"), help="one of the two measures")
    args = ap.parse_args()
    measures = [args.only] if args.only else ["overhead", "demo"]
    with tempfile.TemporaryDirectory(prefix="rnntune-before-after-") as tmp:
        sides = {}
        for name, rev in (("before", args.before), ("after", args.after)):
            tree = Path(tmp) / name
            sides[name] = (
                checkout(rev, tree),
                tree,
                subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "--short", rev], text=True).strip(),
            )
        runs: dict[str, dict[str, list]] = {m: {"before": [], "after": []} for m in measures}
        try:
            for i in range(args.repeats):
                for name, (python, tree, _) in sides.items():
                    if "overhead" in measures:
                        runs["overhead"][name].append(overhead(python, tree))
                    if "demo" in measures:
                        runs["demo"][name].append(demo_seconds(python, tree))
                    print(
                        f"repeat {i + 1} {name}: " + ", ".join(f"{m} {runs[m][name][-1]}" for m in measures), flush=True
                    )
        finally:
            for _, tree, _ in sides.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    before, after = sides["before"][2], sides["after"][2]
    print(f"\n# before {before}, after {after}; {args.repeats} alternating repeats")
    print("| measure | before (median; runs) | after (median; runs) | after / before |")
    print("|---|---|---|---|")
    if "overhead" in measures:
        for sampler in runs["overhead"]["before"][0]:
            b = [r[sampler] for r in runs["overhead"]["before"]]
            a = [r[sampler] for r in runs["overhead"]["after"]]
            print(
                f"| overhead ({sampler}), x plain Optuna | {statistics.median(b):.2f}x; {b} | "
                f"{statistics.median(a):.2f}x; {a} | {statistics.median(a) / statistics.median(b):.2f} |"
            )
    if "demo" in measures:
        b, a = runs["demo"]["before"], runs["demo"]["after"]
        print(
            f"| demo wall time (s) | {statistics.median(b):.1f}; {[round(x, 1) for x in b]} | "
            f"{statistics.median(a):.1f}; {[round(x, 1) for x in a]} | {statistics.median(a) / statistics.median(b):.2f} |"
        )


if __name__ == "__main__":
    main()
