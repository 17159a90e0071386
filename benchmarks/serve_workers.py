"""``rnntune serve --demo``: one local worker against serve's default, side by side.

Each run is a fresh ``rnntune serve --demo`` (the demo study, studies/sine-lstm.yaml: TPE + median
pruning, 20 trials of up to 12 epochs) on its own SQLite database in a temporary folder, as a new
user starts it. A run's time is the study's own, from its start (first claim) to its end (every
trial settled and the best model stored: state ``done``), read from the API; its best value is
``/best``'s. The runs alternate (one worker, the default, one worker, ...) so that drifting load
hits both alike; reported: every run, the medians, their ratio, and how far the default's median
best value is from one worker's. The target (issue 16): the default at least 1.8x faster with a
best value within 10%.

The demo's sampler seed is fixed (42), so its runs differ only where two workers' timing changes
what TPE sees, and three runs of it are one sample of the seed's luck. ``--vary-seed`` makes them
three samples: run i of each side is the demo spec with sampler and training seed 42 + i, submitted
through the API the moment ``serve`` (without ``--demo``) answers, and the best values are compared run by run.

    python benchmarks/serve_workers.py                  # 3 runs each (~3 minutes on 2 cores)
    python benchmarks/serve_workers.py --vary-seed      # the demo at seeds 42, 43, 44, both sides
    python benchmarks/serve_workers.py --repeats 5 --other "--workers 4"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY = "sine-lstm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def _epochs(storage: str) -> int:
    """Epochs the study's trials trained in all (pruning decides how many: fewer finished trials
    to compare with, as with two workers, prune later)."""
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=storage)
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))


def demo_spec(seed: int) -> dict:
    """The demo study's spec with ``seed`` as its sampler's seed and its training seed."""
    from rnntune.service.cli import DEMO_SPEC
    from rnntune.service.spec import load_spec

    spec = load_spec(DEMO_SPEC).model_dump(mode="json")
    spec["sampler"]["seed"] = spec["seed"] = seed
    return spec


def run_once(args: list[str], timeout_s: float, seed: int | None = None) -> dict:
    """One fresh ``serve --demo`` with ``args`` (with ``seed``: ``serve`` and the demo spec at that
    sampler seed submitted to it); the study's seconds, best value and workers."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="rnntune-serve-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RNNTUNE_")}
        env["RNNTUNE_DATABASE_URL"] = f"sqlite:///{tmp}/rnntune.db"
        demo = ["--demo"] if seed is None else []
        cmd = [sys.executable, "-m", "rnntune.service.cli", "serve", *demo, "--port", str(port), *args]
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115 (closed below, after the process)
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}/v1/studies/{STUDY}"
        try:
            deadline = time.monotonic() + timeout_s
            study, spec = None, None if seed is None else demo_spec(seed)
            while time.monotonic() < deadline:
                time.sleep(0.5)
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"serve exited with {proc.returncode}: {(Path(tmp) / 'serve.log').read_text()[-2000:]}"
                    )
                try:
                    if spec is not None:
                        _post(f"http://127.0.0.1:{port}/v1/studies", spec)
                        spec = None
                    study = _get(base)
                except OSError:
                    continue
                if study["state"] in ("done", "failed", "cancelled"):
                    break
            else:
                raise RuntimeError(f"the demo study did not finish within {timeout_s} s")
            if study["state"] != "done":
                raise RuntimeError(f"the demo study ended {study['state']}: {study.get('reason')}")
            best = _get(base + "/best")
            started = datetime.fromisoformat(study["started_at"])
            finished = datetime.fromisoformat(study["finished_at"])
            workers = len(_get(f"http://127.0.0.1:{port}/v1/workers?include_stopped=true")["items"])
            return {
                "seconds": (finished - started).total_seconds(),
                "best": best["value"],
                "workers": workers,
                "epochs": _epochs(f"sqlite:///{tmp}/rnntune.db"),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    ap.add_argument("--baseline", default="--workers 1", help="serve arguments of the baseline")
    ap.add_argument("--other", default="", help="serve arguments of the other side (default: serve's defaults)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a run may take")
    ap.add_argument("--vary-seed", action="store_true", help="run i of each side: the demo at seed 42 + i")
    a = ap.parse_args()
    sides = {"baseline": shlex.split(a.baseline), "other": shlex.split(a.other)}
    label = {"baseline": f"serve --demo {a.baseline}".strip(), "other": f"serve --demo {a.other}".strip()}
    seeds = [42 + i if a.vary_seed else None for i in range(a.repeats)]
    print(
        f"# benchmarks/serve_workers.py on {os.cpu_count()} cores: the demo study ({STUDY}), SQLite, "
        + (f"seeds {seeds[0]}..{seeds[-1]}" if a.vary_seed else "its own seed")
    )
    runs: dict[str, list[dict]] = {"baseline": [], "other": []}
    for i in range(a.repeats):
        for side in ("baseline", "other") if i % 2 == 0 else ("other", "baseline"):
            out = run_once(sides[side], a.timeout, seeds[i])
            runs[side].append(out)
            print(
                f"run {i + 1}: {label[side]}: {out['seconds']:.1f} s, {out['epochs']} epochs, "
                f"best {out['best']:.5f}, {out['workers']} workers",
                flush=True,
            )
    med = {side: statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()}
    best = {side: statistics.median(r["best"] for r in rs) for side, rs in runs.items()}
    epochs = {side: statistics.median(r["epochs"] for r in rs) for side, rs in runs.items()}
    print(
        "\n| serve | workers | seconds (runs) | median s | epochs trained (runs) | median | best value (runs) "
        "| median best |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for side, rs in runs.items():
        seconds = " / ".join(f"{r['seconds']:.1f}" for r in rs)
        trained = " / ".join(str(r["epochs"]) for r in rs)
        values = " / ".join(f"{r['best']:.5f}" for r in rs)
        print(
            f"| `{label[side]}` | {rs[0]['workers']} | {seconds} | {med[side]:.1f} | {trained} | {epochs[side]:g} "
            f"| {values} | {best[side]:.5f} |"
        )
    speedup = med["baseline"] / med["other"]
    rate = {side: statistics.median(r["epochs"] / r["seconds"] for r in rs) for side, rs in runs.items()}
    diff = best["other"] / best["baseline"] - 1
    print(
        f"\nspeed-up (median seconds, baseline / other): {speedup:.2f}x (target >= 1.8x); "
        f"best value, other vs baseline: {diff:+.1%} (target within 10%); epochs a second (median): "
        f"{rate['baseline']:.2f} and {rate['other']:.2f}, {rate['other'] / rate['baseline']:.2f}x"
    )
    if a.vary_seed:  # the same seed on both sides: compare run by run too
        per_seed = [o["best"] / b["best"] - 1 for b, o in zip(runs["baseline"], runs["other"], strict=True)]
        print(
            "best value, other vs baseline, seed by seed: "
            + ", ".join(f"{seed}: {d:+.1%}" for seed, d in zip(seeds, per_seed, strict=True))
            + f"; median {statistics.median(per_seed):+.1%}"
        )


if __name__ == "__main__":
    main()
