"""Should the forecaster's highway (LSTNet's linear skip) be on by default? Test MSE with and without.

For each forecasting task and seed, the same model (the spec's defaults: LSTM, hidden 64, one
layer, Adam, lr 1e-3, batch 64, unless ``--hidden`` / ``--lr`` / ``--epochs`` say otherwise) is
trained twice with ``rnntune.models.train.fit`` -- ``highway`` off and on, everything else equal,
the same training seed -- and its weights of the best val epoch are scored once on the test split.
Beside them, the best of the baselines every study's result holds (``rnntune.models.baselines``:
persistence, seasonal naive, ridge autoregression) on the same split. Reported per task: the
median test MSE (scaled units) over seeds of each, and in how many seeds the highway lowered it.

Tasks: ``sine`` (the demo, data seed = the seed), ``sunspots`` (yearly, window 24), ``co2``
(monthly, window 24, horizon 6), all shipped or generated, nothing downloaded.

    nice -n 10 .venv/bin/python benchmarks/highway.py --seeds 5
    .venv/bin/python benchmarks/highway.py --tasks sunspots --seeds 1 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from rnntune.models.baselines import fit_baselines
from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.models.data import SequenceData, load_dataset
from rnntune.models.recurrent import SequenceModel
from rnntune.models.train import evaluate, fit

TASKS = {
    "sine": {"name": "sine", "params": {"n_series": 300, "length": 40, "noise": 0.05}, "window": 24},
    "sunspots": {"name": "sunspots", "window": 24},
    "co2": {"name": "co2", "window": 24, "horizon": 6},
}


def load(task: str, seed: int) -> SequenceData:
    spec = dict(TASKS[task])
    params = dict(spec.pop("params", {}))
    if task == "sine":
        params["seed"] = seed  # new series each seed; the real series are the same data every seed
    return load_dataset(spec.pop("name"), params, **spec)


def test_mse(data: SequenceData, highway: bool, seed: int, args: argparse.Namespace) -> float:
    mc = ModelConfig(
        input_size=data.input_size,
        output_size=data.output_size,
        hidden_size=args.hidden,
        highway=highway,
        highway_window=min(24, data.window),
    )
    tc = TrainConfig(lr=args.lr, max_epochs=args.epochs, seed=seed, device="cpu", patience=args.patience)
    result = fit(mc, tc, data)
    model = SequenceModel(mc)
    model.load_state_dict(result.state_dict)
    return evaluate(model, data.x_test, data.y_test, "regression")["loss"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(
        f"highway benchmark: {args.seeds} seeds, LSTM hidden {args.hidden}, lr {args.lr:g}, "
        f"{args.epochs} epochs (patience {args.patience}); torch {torch.__version__}, 1 thread"
    )
    print(f"{'task':<9} {'seed':>4} {'rnn':>9} {'rnn+hw':>9} {'baseline':>9}  best baseline      time")
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        rows = []
        for seed in range(args.seeds):
            started = time.perf_counter()
            data = load(task, seed)
            plain, highway = test_mse(data, False, seed, args), test_mse(data, True, seed, args)
            scored = {
                n: b["test"]["loss"]
                for n, b in fit_baselines(data, period=data.meta.get("period")).items()
                if b.get("test")
            }
            best = min(scored, key=lambda n: scored[n])
            rows.append((plain, highway, scored[best]))
            print(
                f"{task:<9} {seed:>4} {plain:>9.4f} {highway:>9.4f} {scored[best]:>9.4f}  {best:<16} "
                f"{time.perf_counter() - started:>5.0f}s",
                flush=True,
            )
        medians = [statistics.median(col) for col in zip(*rows, strict=True)]
        wins = sum(h < p for p, h, _ in rows)
        print(
            f"{task:<9} {'med':>4} {medians[0]:>9.4f} {medians[1]:>9.4f} {medians[2]:>9.4f}  "
            f"highway lower in {wins}/{len(rows)} seeds",
            flush=True,
        )


if __name__ == "__main__":
    main()
