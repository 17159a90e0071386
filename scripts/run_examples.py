"""Run example studies end to end in one process and print what a user should expect.

Each study gets a fresh SQLite database: the API app (in-process client) uploads the example's
CSV when its spec names a dataset, submits the spec, and one worker (1 torch thread) runs every
trial and the finalize step, exactly as `rnntune serve` + `rnntune submit --wait` would.

    .venv/bin/python scripts/run_examples.py                       # every studies/*.yaml
    .venv/bin/python scripts/run_examples.py sunspots-gru co2-lstm
    .venv/bin/python scripts/run_examples.py --shrink               # 3 trials x 2 epochs (CI)
    .venv/bin/python scripts/run_examples.py classic/lstm-regressor-grid      # studies/classic/
    .venv/bin/python scripts/run_examples.py --classic                         # every classic recipe
    .venv/bin/python scripts/run_examples.py classic/rnn-text-grid --trials 27 # a stated, smaller budget
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO / "studies" / "data"
DATA_FILES = {  # dataset -> (file, upload format; None: from the extension)
    "energy-load": (DATA / "energy-load.csv", None),
    "sentiment-reviews": (DATA / "sentiment-reviews.csv", "text"),
    "topic-news": (DATA / "topic-news.jsonl", None),
}


def shrink(spec: dict, n_trials: int = 3, max_epochs: int = 2) -> dict:
    spec = dict(spec)
    spec["budget"] = {**spec.get("budget", {}), "n_trials": n_trials, "max_epochs": max_epochs}
    spec["initial_trials"] = spec.get("initial_trials", [])[:n_trials]
    pruner = dict(spec.get("pruner", {}))
    if pruner.get("name") == "hyperband":
        pruner["min_resource"] = 1
    if pruner.get("name") == "successive_halving":
        pruner["min_resource"] = 1
    spec["pruner"] = pruner
    return spec


def run_study(spec: dict, workdir: Path) -> dict:
    """Upload, submit, run to the end; return the study, its best result and the wall time."""
    from fastapi.testclient import TestClient

    from rnntune.service.api.app import create_app
    from rnntune.service.config import Settings
    from rnntune.service.worker import Worker

    settings = Settings(database_url=f"sqlite:///{workdir / 'rnntune.db'}", data_dir=workdir, poll_interval_s=0.2)
    with TestClient(create_app(settings, dashboard=False)) as client:
        dataset = (spec.get("data") or {}).get("dataset")
        if dataset is not None:
            path, fmt = DATA_FILES[dataset]
            fields = {"name": dataset} | ({"format": fmt} if fmt else {})
            r = client.post("/v1/datasets", files={"file": (path.name, path.read_bytes())}, data=fields)
            assert r.status_code == 201, r.text
        r = client.post("/v1/studies", json=spec)
        assert r.status_code == 201, r.text
        started = time.monotonic()
        # command-trial.yaml runs examples/command/train.py: this worker's operator allows that folder
        commands = [str(REPO / "examples" / "command")]
        Worker(settings, exit_when_idle=True, threads=1, device="cpu", command_dirs=commands).run()
        seconds = time.monotonic() - started
        study = client.get(f"/v1/studies/{spec['name']}").json()
        best = client.get(f"/v1/studies/{spec['name']}/best")
        trials, after = [], None
        while True:  # every trial (epochs trained = its reported steps)
            page = client.get(
                f"/v1/studies/{spec['name']}/trials",
                params={"limit": 100} | ({"after": after} if after is not None else {}),
            ).json()
            trials += page["items"]
            after = page.get("next_after")
            if after is None or not page["items"]:
                break
        return {
            "study": study,
            "best": best.json() if best.status_code == 200 else None,
            "seconds": seconds,
            "trials": trials,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="studies/NAME.yaml (default: all)")
    parser.add_argument("--shrink", action="store_true", help="3 trials x 2 epochs")
    parser.add_argument("--classic", action="store_true", help="every studies/classic/*.yaml")
    parser.add_argument("--trials", type=int, help="run this many trials instead of the spec's budget")
    parser.add_argument("--epochs", type=int, help="train this many epochs per trial instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    paths = [REPO / "studies" / f"{n}.yaml" for n in args.names] or sorted(
        (REPO / "studies" / "classic").glob("*.yaml") if args.classic else (REPO / "studies").glob("*.yaml")
    )
    for path in paths:
        spec = yaml.safe_load(path.read_text())
        if args.shrink:
            spec = shrink(spec)
        if args.trials or args.epochs:
            budget = dict(spec.get("budget", {}))
            budget.update({"n_trials": args.trials} if args.trials else {})
            budget.update({"max_epochs": args.epochs} if args.epochs else {})
            spec["budget"] = budget
            spec["initial_trials"] = spec.get("initial_trials", [])[: budget.get("n_trials")]
        with tempfile.TemporaryDirectory() as tmp:
            out = run_study(spec, Path(tmp))
        s, best = out["study"], out["best"] or {}
        c = s["counts"]
        best_attrs = (s.get("best_trial") or {}).get("user_attrs", {})
        naive = best_attrs.get("naive_val_loss")
        epochs = sum(t["epochs"] for t in out["trials"])
        test = best.get("test_metrics") or {}
        print(
            f"{spec['name']}: {s['state']} in {out['seconds']:.0f}s; {c['complete']} complete, {c['pruned']} pruned, "
            f"{c['failed']} failed; best {s['metric']} {s['best_value']:.4g} (trial #{best.get('trial_number')})"
            + (f", naive {naive:.4g}" if naive is not None else "")
            + (f"; best val metrics {best_attrs.get('val_metrics')}" if best_attrs.get("val_metrics") else "")
            + f"; {epochs} epochs trained in all"
            + "; test "
            + ", ".join(f"{k} {v:.4g}" for k, v in test.items() if isinstance(v, float)),
            flush=True,
        )


if __name__ == "__main__":
    main()
