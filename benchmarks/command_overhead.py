"""A command trial's overhead: examples/command/train.py run alone vs as an rnntune command trial.

Both run the same script, same arguments, same seed, one torch thread. "Under rnntune" is the
worker's command path (``rnntune.service.trials.command.run``): a child with the report pipe, every
epoch's ``report`` answered after a real ``trial.report`` + ``trial.should_prune`` on an Optuna
study in PostgreSQL (RNNTUNE_BENCH_PG; a median pruner that never prunes, so both runs do every
epoch). Both get the environment a CPU worker gives its child (``CUDA_VISIBLE_DEVICES=""``).
The two runs of a pair swap order every pair so drifting load and warm caches hit both alike;
the ratio is the median of the per-pair wall-time ratios, start-up included. The target:
<= 1.05x for an epoch of about a second.

    python benchmarks/command_overhead.py                       # 10,000 series: ~1 s epochs here
    python benchmarks/command_overhead.py --n-series 3000 --epochs 5 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna  # noqa: E402
from _pg import drop_db, new_db  # noqa: E402

from rnntune.service.trials import command  # noqa: E402

SCRIPT = REPO / "examples" / "command" / "train.py"


def script_args(args) -> list[str]:
    return ["--epochs", str(args.epochs), "--n-series", str(args.n_series), "--hidden-size", "32", "--lr", "0.01"]


def alone(args) -> tuple[float, list[float]]:
    started = time.perf_counter()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # what a CPU worker's child gets
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *script_args(args)], check=True, capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - started
    epochs = [float(line.rsplit("(", 1)[1].split()[0]) for line in out.stdout.splitlines() if line.startswith("epoch")]
    return seconds, epochs


def under_rnntune(args, study: optuna.Study) -> tuple[float, list[float]]:
    """Wall time, and the time each report spent in the worker (the child waits for it)."""
    trial = study.ask()
    waits = []

    def on_report(step: int, value: float) -> bool:
        started = time.perf_counter()
        trial.report(value, step)
        prune = trial.should_prune()
        waits.append(time.perf_counter() - started)
        return prune

    started = time.perf_counter()
    result = command.run(
        [sys.executable, str(SCRIPT), *script_args(args)],
        {"lr": 0.01, "hidden_size": 32},
        cwd=SCRIPT.parent,
        device="cpu",
        on_report=on_report,
        stop=threading.Event(),
        timeout_s=3600,
    )
    seconds = time.perf_counter() - started
    study.tell(trial, result.value)
    return seconds, waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-series", type=int, default=10000, help="data size: sets the epoch's length")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    url = new_db()
    try:
        study = optuna.create_study(
            storage=url, pruner=optuna.pruners.MedianPruner(n_startup_trials=10**6), direction="minimize"
        )
        ratios, rows, all_waits = [], [], []
        for i in range(args.repeats):
            if i % 2 == 0:
                t_alone, epochs = alone(args)
                t_rnntune, waits = under_rnntune(args, study)
            else:
                t_rnntune, waits = under_rnntune(args, study)
                t_alone, epochs = alone(args)
            assert len(waits) == args.epochs
            ratios.append(t_rnntune / t_alone)
            all_waits += waits
            rows.append((t_alone, t_rnntune, statistics.mean(epochs)))
            print(
                f"pair {i + 1}: alone {t_alone:.2f} s, under rnntune {t_rnntune:.2f} s "
                f"(ratio {t_rnntune / t_alone:.3f}); epoch {statistics.mean(epochs):.2f} s; "
                f"report round trip {statistics.median(waits) * 1000:.1f} ms",
                flush=True,
            )
        epoch = statistics.median(r[2] for r in rows)
        wait = statistics.median(all_waits)
        print(
            f"\n{args.epochs} epochs of ~{epoch:.2f} s: wall-time ratio {statistics.median(ratios):.3f}x median "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}, start-up included); the child waits "
            f"{wait * 1000:.1f} ms per report (median; max {max(all_waits) * 1000:.1f}): "
            f"{(epoch + wait) / epoch:.3f}x per epoch"
        )
    finally:
        drop_db(url)


if __name__ == "__main__":
    main()
