"""Search efficiency on sunspots: tutorial grid search vs random search vs TPE + median pruning.

Three strategies tune the same GRU (or LSTM) forecaster of yearly sunspots with the service's own
code path (``rnntune.service.spec`` -> ``rnntune.service.search.build_sampler/build_pruner`` ->
``rnntune.service.trials.objective.Objective`` -> ``rnntune.models.train.fit``), on Optuna in-memory storage, at equal
seeds (seed s drives both the sampler and the training seed of every trial):

    grid    hidden_size {32, 64, 128} x lr {1e-2, 1e-3, 1e-4} x batch_size {32, 64, 128}:
            27 trials of --epochs epochs, no pruning (the grid's order is shuffled by the seed)
    random  hidden_size 32..128 (log), lr 1e-4..1e-2 (log; --lr-low/--lr-high), batch_size
            {32, 64, 128}; no pruning
    tpe     the same space; TPE (Optuna 5 defaults: multivariate, constant liar) + median
            pruning, in one or more settings given as --tpe STARTUP/PRUNE_STARTUP/WARMUP: TPE's
            random startup trials / complete trials before the median pruner prunes / epochs
            before a trial may be pruned. The default, 10/5/0, is what a spec's plain `tpe` +
            `median` gets (Optuna's defaults). All settings run on the same seeds in one run,
            next to one grid and one random run.
    oracle  (--oracle) a reference, not a strategy: random hidden_size and batch_size at the lr of
            the grid's best trial, as if the sampler already knew the best lr; once without
            pruning and once with the median pruner (5 complete trials, no warm-up). It measures
            how many epochs it takes just to match the grid's best among configurations the
            grid itself says are as good, i.e. how much of the bar is luck among near-equals.

Random and TPE run until they have trained as many epochs as the whole grid. An epoch is one
pass over the training windows: a pruned trial costs the epochs it ran. Reported per strategy:

    to grid best   epochs trained until a complete trial first scores <= the grid's best val loss
                   (median over seeds; "-" when not reached within the grid's epochs)
    ratio          that, divided by the grid's total epochs (what grid search costs to know its best)
    reached, in 1/3  seeds that reached it within the grid's epochs, and within a third of them
    best @ 1/3     the best val loss (MSE, scaled units) within a third of the grid's epochs
    best @ full    the best val loss within the grid's epochs

    .venv/bin/python benchmarks/search_efficiency.py                   # 3 seeds, 30 epochs, GRU
    .venv/bin/python benchmarks/search_efficiency.py --seeds 10 --jobs 2     # two seeds at a time
    .venv/bin/python benchmarks/search_efficiency.py --seeds 10 --jobs 2 --tpe 10/5/0 --tpe 5/5/5 --tpe 3/3/3
    .venv/bin/python benchmarks/search_efficiency.py --seeds 10 --first-seed 10 --jobs 2   # fresh seeds
    .venv/bin/python benchmarks/search_efficiency.py --seeds 5 --cell lstm
    .venv/bin/python benchmarks/search_efficiency.py --seeds 10 --jobs 2 --oracle   # with the reference
"""

from __future__ import annotations

import argparse
import concurrent.futures
import inspect
import math
import multiprocessing
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import optuna  # noqa: E402

from rnntune.service.data.data_cache import DataCache  # noqa: E402
from rnntune.service.search import build_pruner, build_sampler  # noqa: E402
from rnntune.service.spec import parse_spec  # noqa: E402
from rnntune.service.trials.objective import Objective  # noqa: E402


def _default(cls, name: str) -> int:
    return inspect.signature(cls).parameters[name].default


# What a spec's plain `sampler: {name: tpe}` + `pruner: {name: median}` gets: Optuna's defaults
# (10/5/0 in Optuna 5: TPE's 10 random startup trials; the median pruner prunes once 5 trials are
# complete, from the first epoch on).
SPEC_DEFAULT_TPE = "/".join(
    str(v)
    for v in (
        _default(optuna.samplers.TPESampler, "n_startup_trials"),
        _default(optuna.pruners.MedianPruner, "n_startup_trials"),
        _default(optuna.pruners.MedianPruner, "n_warmup_steps"),
    )
)
GRID = {"hidden_size": [32, 64, 128], "lr": [1e-2, 1e-3, 1e-4], "batch_size": [32, 64, 128]}


def space(args: argparse.Namespace) -> dict:
    """Random's and TPE's space: the grid's ranges; lr from --lr-low to --lr-high (log)."""
    return {
        "hidden_size": {"type": "int", "low": 32, "high": 128, "log": True},
        "lr": {"type": "float", "low": args.lr_low, "high": args.lr_high, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    }


def tpe_setting(text: str) -> str:
    """``--tpe``'s type: STARTUP/PRUNE_STARTUP/WARMUP, three whole numbers."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected three whole numbers as STARTUP/PRUNE_STARTUP/WARMUP, e.g. 10/5/0"
        )
    return text


def parse_tpe(strategy: str) -> tuple[int, int, int]:
    """'tpe 5/5/5' -> (TPE startup trials, median pruner startup trials, warm-up epochs)."""
    startup, prune_startup, warmup = (int(v) for v in strategy.split()[1].split("/"))
    return startup, prune_startup, warmup


def make_spec(strategy: str, seed: int, args: argparse.Namespace, n_trials: int, lr: float | None = None):
    spec = {
        "name": f"bench-{strategy.split()[0]}",
        "data": {"name": "sunspots", "window": args.window},
        "model": {"cell": args.cell},
        "seed": seed,
        "budget": {"n_trials": n_trials, "max_epochs": args.epochs},
    }
    if strategy == "grid":
        spec["search_space"] = {k: {"type": "categorical", "choices": v} for k, v in GRID.items()}
        spec |= {"sampler": {"name": "grid", "seed": seed}, "pruner": {"name": "none"}}
    elif strategy == "random":
        spec |= {"search_space": space(args), "sampler": {"name": "random", "seed": seed}, "pruner": {"name": "none"}}
    elif strategy.startswith("oracle"):  # the grid's best lr, searched hidden_size and batch_size
        # a spec's plain median pruner: Optuna's defaults (5 complete trials, no warm-up)
        pruner = {"name": "median"} if strategy == "oracle median" else {"name": "none"}
        spec |= {
            "search_space": {k: v for k, v in space(args).items() if k != "lr"},
            "training": {"lr": lr},
            "sampler": {"name": "random", "seed": seed},
            "pruner": pruner,
        }
    else:
        tpe_startup, prune_startup, warmup = parse_tpe(strategy)
        spec |= {
            "search_space": space(args),
            "sampler": {"name": "tpe", "seed": seed, "n_startup_trials": tpe_startup},
            "pruner": {"name": "median", "n_startup_trials": prune_startup, "n_warmup_steps": warmup},
        }
    return parse_spec(spec)


def run(
    strategy: str,
    seed: int,
    args: argparse.Namespace,
    epoch_budget: int | None,
    cache: DataCache,
    lr: float | None = None,
) -> dict:
    """Trials until the grid is exhausted (grid) or ``epoch_budget`` epochs are spent.

    Returns the trajectory: after each trial, (epochs so far, best complete value so far)."""
    n_trials = 27 if strategy == "grid" else 10_000
    spec = make_spec(strategy, seed, args, n_trials, lr)
    study = optuna.create_study(
        direction="minimize", sampler=build_sampler(spec, seed_offset=0), pruner=build_pruner(spec)
    )
    objective = Objective(spec, device="cpu", data_cache=cache)
    epochs, best, trajectory = 0, math.inf, []
    started = time.perf_counter()
    while True:
        study.optimize(objective, n_trials=1)
        trial = study.trials[-1]
        epochs += len(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = min(best, trial.value)
        trajectory.append((epochs, best, trial.state.name))
        if strategy == "grid" and len(study.trials) == 27:
            break
        if epoch_budget is not None and epochs >= epoch_budget:
            break
    return {
        "trajectory": trajectory,
        "epochs": epochs,
        "trials": len(trajectory),
        "pruned": sum(s == "PRUNED" for _, _, s in trajectory),
        "seconds": time.perf_counter() - started,
        "best_params": study.best_trial.params,
    }


def epochs_to_reach(trajectory, target: float) -> int | None:
    for epochs, best, _ in trajectory:
        if best <= target:
            return epochs
    return None


def best_within(trajectory, budget: float) -> float:
    """Best complete value among the trials that finished within ``budget`` epochs."""
    best = math.inf
    for epochs, value, _ in trajectory:
        if epochs > budget:
            break
        best = value
    return best


def tpe_strategies(args: argparse.Namespace) -> list[str]:
    return [f"tpe {v}" for v in args.tpe]


def strategies(args: argparse.Namespace) -> list[str]:
    return ["grid", "random", *tpe_strategies(args), *(["oracle", "oracle median"] if args.oracle else [])]


def run_seed(seed: int, args: argparse.Namespace) -> tuple[dict[str, dict], float, dict]:
    """Every strategy at one seed: grid first (its best is the bar), then random, each TPE setting
    and, with --oracle, the two references."""
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    cache = DataCache()
    grid_epochs = 27 * args.epochs
    grid = run("grid", seed, args, None, cache)
    grid_best = grid["trajectory"][-1][1]
    outs = {}
    for strategy in strategies(args):
        out = grid if strategy == "grid" else run(strategy, seed, args, grid_epochs, cache, grid["best_params"]["lr"])
        out["reach"] = grid_epochs if strategy == "grid" else epochs_to_reach(out["trajectory"], grid_best)
        out["at_third"] = best_within(out["trajectory"], grid_epochs / 3)
        out["at_full"] = best_within(out["trajectory"], grid_epochs)
        outs[strategy] = out
    return outs, grid_best, grid["best_params"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run from this one (fresh seeds for a setting chosen after seeing others)",
    )
    parser.add_argument("--epochs", type=int, default=30, help="max epochs per trial")
    parser.add_argument("--cell", default="gru", choices=("gru", "lstm"))
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument(
        "--tpe",
        action="append",
        type=tpe_setting,
        metavar="S/P/W",
        help="TPE + median setting: TPE startup trials / pruner startup trials / pruner warm-up epochs; "
        "repeat to compare settings on the same seeds (default: what a spec's plain tpe + median gets, "
        f"{SPEC_DEFAULT_TPE})",
    )
    parser.add_argument("--lr-low", type=float, default=1e-4, help="random and TPE: the bottom of the log lr range")
    parser.add_argument("--lr-high", type=float, default=1e-2, help="random and TPE: the top of the log lr range")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also run the reference: random hidden and batch at the grid's best lr, without and with median pruning",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker's default on CPU)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    args = parser.parse_args()
    args.tpe = args.tpe or [SPEC_DEFAULT_TPE]

    import torch

    grid_epochs = 27 * args.epochs
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    print(
        f"sunspots, {args.cell.upper()}, window {args.window}, {args.epochs} epochs per trial, "
        f"seeds {seeds[0]}..{seeds[-1]}, torch {torch.__version__} ({args.threads} thread), Optuna {optuna.__version__}"
    )
    print(
        f"grid: 27 trials x {args.epochs} epochs = {grid_epochs} epochs; random and TPE stop at the same number of epochs\n"
    )
    print(
        f"{'seed':>4} {'strategy':<13} {'trials':>6} {'pruned':>6} {'epochs':>6} {'to grid best':>12} {'best @1/3':>10} {'best @full':>10} {'time':>6}"
    )
    rows: dict[str, list[dict]] = {s: [] for s in strategies(args)}
    if args.jobs == 1:
        results = map(run_seed, seeds, [args] * args.seeds)
    else:  # one seed per process; a seed's numbers do not depend on which process ran it
        pool = concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(run_seed, seeds, [args] * args.seeds)
    for seed, (outs, grid_best, grid_params) in zip(seeds, results, strict=False):
        for strategy, out in outs.items():
            rows[strategy].append(out)
            reach = out["reach"]
            print(
                f"{seed:>4} {strategy:<13} {out['trials']:>6} {out['pruned']:>6} {out['epochs']:>6} "
                f"{reach if reach is not None else '-':>12} {out['at_third']:>10.4f} {out['at_full']:>10.4f} {out['seconds']:>5.0f}s",
                flush=True,
            )
        print(f"{'':>4} grid best {grid_best:.4f} at {grid_params}")

    print(
        f"\nmedian over {args.seeds} seeds (ratio: epochs to reach the grid's best / the grid's {grid_epochs} epochs)"
    )
    print(
        f"{'strategy':<26} {'to grid best':>12} {'ratio':>7} {'reached':>8} {'in 1/3':>7} {'best @1/3':>10} {'best @full':>10}"
    )
    labels = {"grid": "grid (27, no pruning)", "random": "random (no pruning)"}
    labels |= {s: f"TPE + median {s.split()[1]}" for s in tpe_strategies(args)}
    labels |= {"oracle": "grid's best lr, no pruning", "oracle median": "grid's best lr + median"}
    for strategy, outs in rows.items():
        reached = [o["reach"] for o in outs if o["reach"] is not None]
        # a seed that never reached it counts as more than the grid's epochs
        reach = statistics.median([o["reach"] if o["reach"] is not None else math.inf for o in outs])
        shown = f"{reach:.0f}" if math.isfinite(reach) else f">{grid_epochs}"
        ratio = f"{reach / grid_epochs:.2f}" if math.isfinite(reach) else "-"
        print(
            f"{labels[strategy]:<26} {shown:>12} {ratio:>7} {len(reached):>4}/{len(outs):<3} "
            f"{sum(r <= grid_epochs / 3 for r in reached):>3}/{len(outs):<3} "
            f"{statistics.median(o['at_third'] for o in outs):>10.4f} {statistics.median(o['at_full'] for o in outs):>10.4f}"
        )


if __name__ == "__main__":
    main()
