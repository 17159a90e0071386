"""The evidence suite for the spec's defaults: search strategies x built-in tasks x seeds, side by side.

Built like ``benchmarks/search_efficiency.py``: every strategy runs the service's own code path
(``rnntune.service.spec`` -> ``rnntune.service.search.build_sampler/build_pruner`` ->
``rnntune.service.trials.objective.Objective`` -> ``rnntune.models.train.fit``) on Optuna in-memory
storage, and seed s drives both the sampler and the training seed of every trial. The model a
user takes home is what the service's finalize step makes of the search's best trial
(``rnntune.service.trials.finalize.best_trial`` + ``build_model``: the best trial re-created, tested once).

Tasks (``--tasks``), each with a tutorial grid and the same ranges for the other strategies:

    sunspots  yearly sunspots, window 24, GRU: hidden {32, 64, 128} x lr {1e-2, 1e-3, 1e-4} x
              batch {32, 64, 128}, 30 epochs a trial (benchmarks/search_efficiency.py's grid)
    text      the sentiment reviews (studies/data), embedding -> RNN, Adam: embed {64, 128, 256} x
              hidden {64, 128, 256} x layers {1, 2, 3} x lr {1e-3, 5e-4, 1e-4} x batch {32, 64, 128},
              5 epochs a trial (studies/classic/rnn-text-grid.yaml, the IMDb-style tutorial grid)
    digits    8x8 digits as 8 rows of 8, RNN: hidden {32, 64, 128} x lr {1e-2, 1e-3, 1e-4} x
              batch {32, 64, 128}, 20 epochs a trial
    ragged    the same digits (scikit-learn's bundled copy) read column by column with the blank
              columns at either side dropped: 2-8 steps of 8 pixels, an .npz padded with
              ``lengths`` (trained packed), GRU, digits' grid, 20 epochs a trial

Beside the strategies, each task and seed has the baselines every study's result holds
(``rnntune.models.baselines`` on the trials' split) as rows ``baseline:NAME`` (test: its test
loss; best val: its val loss), and each table ends with one line per strategy saying whether its
median take-home test loss beats the best baseline's, and in how many seeds it beat that seed's
best baseline (what the study result's ``versus_baseline`` says, seed by seed).

Strategies (``--strategies``), named SAMPLER or SAMPLER+PRUNER with the spec's names and Optuna's
default options (what a spec that names them gets); no pruner means no pruning:

    grid                       the task's grid, every point, no pruning: the bar
    random                     random search
    tpe+median                 today's spec default
    tpe+hyperband              hyperband with max_resource = the epochs a trial
    random+successive_halving
    gp                         Optuna's Gaussian-process sampler
    cmaes                      CMA-ES (categorical axes fall back to independent sampling)
    STRATEGY@N, STRATEGY@Ncl   N workers in parallel, simulated in lockstep (N trials asked before
                               any is told), without and with TPE's constant liar (Optuna 5's
                               TPE default is with; @N turns it off): tpe+median@2, tpe+median@2cl
    STRATEGY/KxS[xF]           re-evaluated winners (the spec's selection: top_k K, seeds S, folds
                               F; F on sunspots only): the search stops early enough that its K
                               best trials' further runs, each counted at a trial's full epochs,
                               fit the same budget; the take-home model is the best mean's

Every strategy but grid runs trials until it has trained as many epochs as the grid
(``--budget`` scales that). An epoch is one pass over the training data; a pruned trial costs the
epochs it ran. Reported per task and strategy, the median over seeds of:

    test @full    the take-home model's test loss (MSE in scaled units; cross-entropy) at the full budget
    test @1/3     the same for the best trial found within a third of the grid's epochs
    best val      the search's best val loss (the number a search reports)
    gap           test @full - that model's val loss: how much the winner's val score flattered it
    gap@mean      test @full - the val the search reports for it: with re-evaluation (/KxS) the mean
                  of the winner's runs, as ``/best`` and ``rnntune status`` show it; else the gap
    to grid best  epochs until a complete trial first scores <= the grid's best val loss
                  (">N" when more than half the seeds did not within the budget), and in how many seeds
    test < grid   in how many seeds the take-home test loss is below the grid's of the same seed
    p             the two-sided sign test of that count (ties dropped): below ~0.05, more than luck

Scale: ``--axis-values K`` keeps K evenly spread values of each grid axis (3 is every value;
K=2 makes the text grid 32 points instead of 243); ``--epochs`` overrides the epochs a trial;
both take N for every task or TASK=N,TASK=N. ``--jobs`` runs seeds in parallel processes.

    nice -n 10 .venv/bin/python benchmarks/search_suite.py                       # 3 tasks x 3 seeds, full grids
    nice -n 10 .venv/bin/python benchmarks/search_suite.py --seeds 10 --jobs 2   # the evidence run
    nice -n 10 .venv/bin/python benchmarks/search_suite.py --epochs sunspots=10,digits=5 --axis-values text=2
    .venv/bin/python benchmarks/search_suite.py --tasks sunspots --seeds 1 --axis-values 2 --epochs 1 \\
        --strategies random,tpe+median                                           # CI's tiny version
    .venv/bin/python benchmarks/search_suite.py --summarize run-a.txt run-b.txt  # runs split by seeds, as one

A run prints each seed's lines as that seed finishes (TERM or Ctrl-C: the summary of those);
``--summarize`` reads them back from several runs' saved output, files or folders of them (seed
ranges run apart, or other strategies beside the same grid) and prints the summary as one run
would. An evidence run takes hours: with ``--results DIR`` each search's line is kept in
``DIR/TASK-SCALE-seed-N.txt`` the moment it finishes (SCALE: grid points x epochs a trial, e.g.
``text-243x5-seed-0.txt``), under a header with the scale, the torch and Optuna versions, the
commit and the CPU, and a run runs only the searches DIR does not hold at its scale, so the same
command goes on where an interrupted one stopped, and adding a strategy runs just that strategy
(the grid's line is the bar). Each scale keeps files of its own, summarized as a table of its
own; a file of the run's scale measured with another torch or Optuna stops the run. A seed's numbers repeat to the
last digit on one machine; on another they may not (another CPU's kernels round differently,
another numpy or scikit-learn may too, and training amplifies that), which is one more reason for
many seeds. The project's own evidence is kept that way
in ``benchmarks/results/search-suite``:

    nice -n 5 .venv/bin/python benchmarks/search_suite.py --tasks text --seeds 10 \\
        --strategies tpe+median,tpe+median@2cl --results benchmarks/results/search-suite
    .venv/bin/python benchmarks/search_suite.py --summarize benchmarks/results/search-suite
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import math
import multiprocessing
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402

from rnntune.service.data.data_cache import DataCache  # noqa: E402
from rnntune.service.search import build_pruner, build_sampler  # noqa: E402
from rnntune.service.spec import PRUNERS, SAMPLERS, parse_spec  # noqa: E402
from rnntune.service.trials.finalize import best_trial, build_model  # noqa: E402
from rnntune.service.trials.objective import Objective  # noqa: E402
from rnntune.service.trials.recipe import TrialRecord  # noqa: E402
from rnntune.service.trials.selection import pick_winner, reevaluate  # noqa: E402


@dataclass(frozen=True)
class Task:
    data: dict
    grid: dict[str, list]
    space: dict[str, dict]  # the grid's ranges, for every strategy but grid
    epochs: int
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


TASKS = {
    "sunspots": Task(
        data={"name": "sunspots", "window": 24},
        model={"cell": "gru"},
        grid={"hidden_size": [32, 64, 128], "lr": [1e-2, 1e-3, 1e-4], "batch_size": [32, 64, 128]},
        space={
            "hidden_size": {"type": "int", "low": 32, "high": 128, "log": True},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        },
        epochs=30,
    ),
    "text": Task(
        data={
            "name": "text",
            "path": str(REPO / "studies" / "data" / "sentiment-reviews.csv"),
            "params": {"text_column": "text", "label_column": "label", "lowercase": True, "min_freq": 1},
        },
        model={"cell": "rnn"},
        training={"optimizer": "adam"},
        grid={
            "embed_dim": [64, 128, 256],
            "hidden_size": [64, 128, 256],
            "num_layers": [1, 2, 3],
            "lr": [1e-3, 5e-4, 1e-4],
            "batch_size": [32, 64, 128],
        },
        space={
            "embed_dim": {"type": "int", "low": 64, "high": 256, "log": True},
            "hidden_size": {"type": "int", "low": 64, "high": 256, "log": True},
            "num_layers": {"type": "int", "low": 1, "high": 3},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
            "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        },
        epochs=5,
    ),
    "digits": Task(
        data={"name": "digits"},
        model={"cell": "rnn"},
        grid={"hidden_size": [32, 64, 128], "lr": [1e-2, 1e-3, 1e-4], "batch_size": [32, 64, 128]},
        space={
            "hidden_size": {"type": "int", "low": 32, "high": 128, "log": True},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
        },
        epochs=20,
    ),
}


def ragged_digits(path: Path) -> str:
    """scikit-learn's bundled 8x8 digits (``load_digits`` reads the copy inside the package; nothing
    is downloaded) read column by column, left to right, with the blank columns before the first
    and after the last stroke dropped: sequences of 2-8 steps of 8 pixels (a narrow 1 is short),
    padded to 8 with ``lengths``, as an .npz a user would upload. Written once; returns its path."""
    if not path.exists():
        import numpy as np
        from sklearn.datasets import load_digits

        digits = load_digits()
        columns = digits.images.transpose(0, 2, 1)  # (N, 8 columns, 8 pixels)
        ink = columns.sum(axis=2) > 0  # (N, 8)
        first, last = ink.argmax(axis=1), 7 - ink[:, ::-1].argmax(axis=1)
        lengths = last - first + 1
        x = np.zeros_like(columns)
        for i, (start, n) in enumerate(zip(first, lengths, strict=True)):
            x[i, :n] = columns[i, start : start + n]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, X=x, y=digits.target.astype(np.int64), lengths=lengths.astype(np.int64))
    return str(path)


RAGGED = Path(tempfile.gettempdir()) / "rnntune-search-suite" / "digits-columns.npz"
TASKS["ragged"] = Task(
    data={"name": "npz", "path": str(RAGGED), "params": {"scale": True}},
    model={"cell": "gru"},
    grid=TASKS["digits"].grid,
    space=TASKS["digits"].space,
    epochs=20,
)
STRATEGIES = ("grid", "random", "tpe+median", "tpe+hyperband", "random+successive_halving", "gp", "cmaes")


FORECASTING = {"sunspots"}  # the tasks where selection.folds > 1 applies


def selection_of(strategy: str) -> tuple[int, int, int] | None:
    """``.../KxS[xF]`` -> (top_k, seeds, folds); None without a selection."""
    _, sep, sel = strategy.partition("/")
    if not sep:
        return None
    parts = [int(p) for p in sel.split("x")]
    return parts[0], parts[1], parts[2] if len(parts) == 3 else 1


def parallel(strategy: str) -> tuple[str, int, bool]:
    """``SAMPLER[+PRUNER][@N[cl]][/KxS[xF]]`` -> (SAMPLER[+PRUNER], workers, constant liar)."""
    base, _, par = strategy.partition("/")[0].partition("@")
    if not par:
        return base, 1, False
    liar = par.endswith("cl")
    return base, int(par.removesuffix("cl")), liar


def strategy_name(text: str) -> str:
    """``--strategies``' items: SAMPLER or SAMPLER+PRUNER, by the spec's names, with ``@N`` for N
    workers in parallel and ``@Ncl`` for TPE's constant liar with them, and ``/KxS[xF]`` for the
    spec's ``selection: {top_k: K, seeds: S, folds: F}``."""
    head, sep, sel = text.partition("/")
    parts = sel.split("x")
    if sep and not (2 <= len(parts) <= 3 and all(p.isdigit() and int(p) >= 1 for p in parts)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected /KxS or /KxSxF (top_k, seeds, folds >= 1)")
    base, _, par = head.partition("@")
    if par and not (par.removesuffix("cl").isdigit() and int(par.removesuffix("cl")) >= 2):
        raise argparse.ArgumentTypeError(f"{text!r}: expected @N or @Ncl with N >= 2 workers")
    if par.endswith("cl") and not base.startswith("tpe"):
        raise argparse.ArgumentTypeError(f"{text!r}: the constant liar (@Ncl) is TPE's option")
    sampler, _, pruner = base.partition("+")
    if sampler not in SAMPLERS or (pruner and pruner not in PRUNERS):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SAMPLER[+PRUNER] with a sampler of {', '.join(SAMPLERS)} "
            f"and a pruner of {', '.join(PRUNERS)}"
        )
    if sampler == "grid" and (pruner or par or sep):
        raise argparse.ArgumentTypeError(f"{text!r}: grid runs every point, without pruning, in one worker")
    return text


def thin(values: list, k: int | None) -> list:
    """``k`` evenly spread values of a grid axis, its ends included (all of them when k is None)."""
    if k is None or k >= len(values):
        return list(values)
    if k == 1:
        return [values[len(values) // 2]]
    return [values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)]


def per_task(text: str) -> dict[str, int]:
    """``--epochs`` / ``--axis-values``: N for every task, or TASK=N,TASK=N (others: the default)."""
    out = {}
    for item in text.split(","):
        name, sep, value = item.strip().rpartition("=")
        if (sep and name not in TASKS) or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected N or TASK=N (N >= 1) with a task of {', '.join(TASKS)}"
            )
        for task in [name] if sep else TASKS:
            out[task] = int(value)
    return out


def task_grid(task_name: str, args: argparse.Namespace) -> dict[str, list]:
    k = args.axis_values.get(task_name)
    return {name: thin(values, k) for name, values in TASKS[task_name].grid.items()}


def task_epochs(task_name: str, args: argparse.Namespace) -> int:
    return args.epochs.get(task_name, TASKS[task_name].epochs)


def make_spec(task_name: str, strategy: str, seed: int, args: argparse.Namespace, n_trials: int):
    task = TASKS[task_name]
    base, workers, liar = parallel(strategy)
    sampler, _, pruner = base.partition("+")
    spec = {
        "name": f"suite-{task_name}",
        "data": task.data,
        "model": task.model,
        "training": task.training,
        "seed": seed,
        "budget": {"n_trials": n_trials, "max_epochs": task_epochs(task_name, args)},
        "sampler": {"name": sampler, "seed": seed},
        "pruner": {"name": pruner or "none"},
    }
    if workers > 1 and sampler == "tpe":  # explicit both ways: Optuna 5's TPE defaults to the liar
        spec["sampler"]["constant_liar"] = liar
    sel = selection_of(strategy)
    if sel:
        top_k, seeds, folds = sel
        spec["selection"] = {"top_k": top_k, "seeds": seeds, "folds": folds if task_name in FORECASTING else 1}
    if sampler == "cmaes":  # categorical axes are sampled independently, as it would warn every trial
        spec["sampler"]["warn_independent_sampling"] = False
    if sampler == "grid":
        spec["search_space"] = {k: {"type": "categorical", "choices": v} for k, v in task_grid(task_name, args).items()}
    else:
        spec["search_space"] = task.space
    return parse_spec(spec)


def run(task_name: str, strategy: str, seed: int, args: argparse.Namespace, epoch_budget: int, cache: DataCache):
    """One search: the grid's points, or trials until ``epoch_budget`` epochs are spent. Then the
    take-home model of its best trial at the full budget and within a third of it."""
    n_grid = math.prod(len(v) for v in task_grid(task_name, args).values())
    n_trials = n_grid if strategy == "grid" else 100_000
    spec = make_spec(task_name, strategy, seed, args, n_trials)
    study = optuna.create_study(
        # named, as the service's studies are: Hyperband puts a trial in a bracket by a hash of the
        # study's name and the trial's number, and an unnamed study's name is a random UUID
        study_name=f"suite-{task_name}-{strategy}-{seed}",
        direction=spec.direction,
        sampler=build_sampler(spec, seed_offset=0),
        pruner=build_pruner(spec),
    )
    objective = Objective(spec, device="cpu", data_cache=cache)
    _, workers, _ = parallel(strategy)
    sel = spec.selection
    # the re-evaluation's runs are paid from the same budget, each counted at a trial's full epochs
    reserve = 0 if sel.is_default else sel.top_k * (sel.seeds * sel.folds - 1) * task_epochs(task_name, args)
    epochs, best, trajectory = 0, math.inf, []  # after each trial: (epochs so far, best val so far, trial)
    started = time.perf_counter()
    done = False
    while not done:
        for trial in _step(study, objective, workers):
            epochs += len(trial.intermediate_values)
            if trial.state == optuna.trial.TrialState.COMPLETE:
                best = min(best, trial.value)
            trajectory.append((epochs, best, trial))
            if strategy == "grid" and len(study.trials) == n_grid:
                done = True
            if strategy != "grid" and epochs >= max(epoch_budget - reserve, 1):
                done = True
    if sel.is_default:
        chosen, reported = best_trial(study, spec), None
    else:
        chosen, reported, epochs = _reevaluated(spec, study, cache, epochs)
    search_s = time.perf_counter() - started
    full = _take_home(spec, chosen, cache)
    early = _best_within(trajectory, epoch_budget / 3)
    third = _take_home(spec, early, cache) if early is not None else None
    return {
        "trajectory": [(e, b) for e, b, _ in trajectory],
        "epochs": epochs,
        "trials": len(trajectory),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for _, _, t in trajectory),
        "best_val": best,
        "test": full["test"],
        "gap": full["test"] - full["val"],
        "gap_mean": full["test"] - (full["val"] if reported is None else reported),
        "test_third": third["test"] if third else math.inf,
        "seconds": search_s,
    }


def _step(study: optuna.Study, objective: Objective, workers: int) -> list[optuna.trial.FrozenTrial]:
    """One trial (one worker), or ``workers`` trials in lockstep: all asked, parameters drawn,
    before any is told, as N workers that start together see each other's trials RUNNING with
    their parameters (where TPE's constant liar acts). A simulation of N workers, deterministic for a seed: the trials train one after the
    other here, so the pruner of a later one sees its batch-mates' whole curves (in a real
    parallel run, only their epochs so far)."""
    if workers == 1:
        study.optimize(objective, n_trials=1)
        return [study.trials[-1]]
    # Optuna samples a trial's parameters when the objective suggests them: to give each
    # worker's trial its parameters before the others train, as real workers have, ask with the
    # search space's distributions (those of an earlier trial; the first step has none to copy).
    earlier = [t for t in study.get_trials(deepcopy=False) if t.distributions]
    fixed = earlier[0].distributions if earlier else None
    asked = [study.ask(fixed_distributions=fixed) for _ in range(workers)]
    for trial in asked:
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    return [study.trials[t.number] for t in asked]


def _reevaluated(spec, study: optuna.Study, cache: DataCache, epochs: int) -> tuple[TrialRecord, float, int]:
    """What the service's selection does when the budget is spent, in process: the top_k
    complete trials, each trained again on every (seed index, fold) but the search's own run
    (``selection.reevaluate``), the winner by best mean (``selection.pick_winner``). Returns the
    winner, its mean val (what the service reports for it) and the epochs spent, each run counted
    at a trial's full epochs."""
    sel = spec.selection
    sign = 1.0 if spec.direction == "minimize" else -1.0
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    ranked = sorted(complete, key=lambda t: sign * t.value)[: sel.top_k]
    candidates = []
    for rank, t in enumerate(ranked):
        record = TrialRecord(t.number, t.params, t.value, t.user_attrs)
        values = [t.value]
        for seed_index in range(sel.seeds):
            for fold in range(sel.folds):
                if (seed_index, fold) == (0, sel.folds - 1):
                    continue  # the search trial itself
                value, _ = reevaluate(
                    spec,
                    record,
                    seed_index=seed_index,
                    fold=fold,
                    device="cpu",
                    data_cache=cache,
                    stop=threading.Event(),
                )
                values.append(value)
                epochs += spec.budget.max_epochs
        candidates.append({"trial": t.number, "rank": rank, "mean": statistics.fmean(values)})
    winner = pick_winner(candidates, spec.direction)
    (t,) = [t for t in ranked if t.number == winner]
    (mean,) = [c["mean"] for c in candidates if c["trial"] == winner]
    return TrialRecord(t.number, t.params, t.value, t.user_attrs), mean, epochs


def _best_within(trajectory, budget: float) -> TrialRecord | None:
    """The best complete trial among those that finished within ``budget`` epochs."""
    best = None
    for epochs, _, trial in trajectory:
        if epochs > budget:
            break
        if trial.state == optuna.trial.TrialState.COMPLETE and (best is None or trial.value < best.value):
            best = trial
    if best is None:
        return None
    return TrialRecord(best.number, best.params, best.value, best.user_attrs)


def _take_home(spec, trial: TrialRecord, cache: DataCache) -> dict[str, float]:
    built = build_model(spec, trial, device="cpu", data_cache=cache, stop=threading.Event())
    return {"test": built.test["loss"], "val": built.metrics["val"]["loss"]}


def epochs_to_reach(trajectory, target: float) -> int | None:
    for epochs, best in trajectory:
        if best <= target:
            return epochs
    return None


def run_seed(
    task_name: str, seed: int, args: argparse.Namespace, have: dict[str, dict] | None = None
) -> dict[str, dict]:
    """Every strategy on one task at one seed: grid first (its best val is the bar). ``have``: the
    strategies a results folder already holds for this task and seed (the grid's line is the
    bar then); with ``--results`` each new search's line is written there as it finishes."""
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    have = have or {}
    ragged_digits(RAGGED)
    # the text task's file and the ragged digits' .npz
    cache = DataCache(data_roots=[str(REPO / "studies" / "data"), str(RAGGED.parent)], allow_root_text=True)
    n_grid = math.prod(len(v) for v in task_grid(task_name, args).values())
    budget = round(n_grid * task_epochs(task_name, args) * args.budget)
    grid = have.get("grid")
    if grid is None:
        grid = run(task_name, "grid", seed, args, budget, cache)
        grid.update(reach=grid["epochs"], budget=budget)  # the grid knows its best only once every point has run
        _save(args, task_name, seed, "grid", grid)
    outs = {}
    if not any(is_baseline(strategy) for strategy in have):
        for strategy, out in run_baselines(task_name, seed, args, cache, budget).items():
            _save(args, task_name, seed, strategy, out)
            have = {**have, strategy: out}
    for strategy in args.strategies:
        if strategy in have or strategy == "grid":
            outs[strategy] = have.get(strategy, grid)
            continue
        out = run(task_name, strategy, seed, args, budget, cache)
        out["reach"] = epochs_to_reach(out["trajectory"], grid["best_val"])
        out["budget"] = budget
        _save(args, task_name, seed, strategy, out)
        outs[strategy] = out
    return {**outs, **{k: v for k, v in have.items() if is_baseline(k)}}


def is_baseline(strategy: str) -> bool:
    return strategy.startswith("baseline:")


def run_baselines(
    task_name: str, seed: int, args: argparse.Namespace, cache: DataCache, budget: int
) -> dict[str, dict]:
    """The baselines every study's result holds (``rnntune.models.baselines``), fitted on the split
    the trials use, as rows ``baseline:NAME``: test = its test loss, best val = its val loss."""
    from rnntune.models.baselines import fit_baselines

    spec = make_spec(task_name, "random", seed, args, 1)
    hp = spec.fixed_params()
    data = cache.get(spec, hp.get("window"), hp.get("max_length"))
    out = {}
    for name, fitted in fit_baselines(data, period=data.meta.get("period")).items():
        if fitted.get("test") is None:
            continue  # skipped (no period, too big): the result says why
        val, test = fitted["val"]["loss"], fitted["test"]["loss"]
        out[f"baseline:{name}"] = {
            "trajectory": [], "epochs": 0, "trials": 0, "pruned": 0, "reach": None, "budget": budget,
            "best_val": val, "test": test, "test_third": test, "gap": test - val, "gap_mean": test - val,
            "seconds": fitted["seconds"],
        }  # fmt: skip
    return out


def header(tasks: list[str], seeds: list[int], args: argparse.Namespace) -> str:
    """A run's first line; a results file's too, where it says at what scale and with which
    versions its lines were measured (``--results`` reuses only lines measured as it would)."""
    import torch

    return (
        f"search suite: seeds {seeds[0]}..{seeds[-1]}; tasks "
        + ", ".join(
            f"{t} ({math.prod(len(v) for v in task_grid(t, args).values())}-point grid x {task_epochs(t, args)} epochs)"
            for t in tasks
        )
        + f"; budget {args.budget:g} x the grid's epochs; torch {torch.__version__} ({args.threads} thread), "
        f"Optuna {optuna.__version__}; numpy {_version('numpy')}, scikit-learn {_version('scikit-learn')}; "
        f"commit {getattr(args, 'commit', None) or _commit()}; cpu {_cpu()}"
    )


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _cpu() -> str:
    """The processor's name: the same seed on another CPU may train to other numbers (its kernels
    round differently), so a line says where it was measured."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


_SCALE = re.compile(r"(\w+) \((\d+)-point grid x (\d+) epochs\)")


def scales(first_line: str) -> dict[str, tuple]:
    """What a run's header says of each task's scale: {task: (grid points, epochs a trial,
    budget, threads, torch, Optuna)}; {} for a line that is no header."""
    if not first_line.startswith("search suite:"):
        return {}
    rest = {m.group(1): m.group(2) for m in re.finditer(r"(budget|torch|Optuna) ([^\s;]+)", first_line)}
    threads = re.search(r"\((\d+) thread\)", first_line)
    common = (rest.get("budget"), threads.group(1) if threads else None, rest.get("torch"), rest.get("Optuna"))
    return {m.group(1): (int(m.group(2)), int(m.group(3)), *common) for m in _SCALE.finditer(first_line)}


def scale_of(task_name: str, args: argparse.Namespace) -> tuple:
    """This run's scale for a task, as ``scales`` reads it from a header."""
    return scales(header([task_name], [0], args))[task_name]


def tag(scale: tuple) -> str:
    """A scale in a results file's name: grid points x epochs a trial, and the budget and torch
    threads where they are not 1 (``27x30``, ``32x5-budget2``). Each scale has files of its own,
    so lines measured at one scale are never filed under another's header."""
    points, epochs, budget, threads = scale[:4]
    return (
        f"{points}x{epochs}"
        + (f"-budget{budget}" if budget != "1" else "")
        + (f"-threads{threads}" if threads != "1" else "")
    )


def label(task_name: str, scale: tuple | None) -> str:
    """A summary table's name: the task's, with its scale's tag where that is not the task's own
    (the full grid, its epochs, budget 1, one thread): two scales of a task are two tables."""
    task = TASKS[task_name]
    if scale is None or tuple(scale[:4]) == (math.prod(len(v) for v in task.grid.values()), task.epochs, "1", "1"):
        return task_name
    return f"{task_name} {tag(scale)}"


def results_file(args: argparse.Namespace, task_name: str, seed: int) -> Path:
    return Path(args.results) / f"{task_name}-{tag(scale_of(task_name, args))}-seed-{seed}.txt"


def _save(args: argparse.Namespace, task_name: str, seed: int, strategy: str, out: dict) -> None:
    if not args.results:
        return
    path = results_file(args, task_name, seed)
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write(header([task_name], [seed], args) + "\n")
        f.write(row_line(task_name, seed, strategy, out) + "\n")


def stored(args: argparse.Namespace, jobs: list[tuple[str, int]]) -> dict[tuple[str, int], dict[str, dict]]:
    """The lines ``--results``' folder holds for these (task, seed)s at this run's scale, by (task,
    seed) and strategy. A file of this scale measured with another torch or Optuna is an error:
    this run's lines would be filed under a header that does not describe them."""
    found: dict[tuple[str, int], dict[str, dict]] = {}
    for task_name, seed in jobs:
        path = results_file(args, task_name, seed)
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        want = scale_of(task_name, args)
        if not lines or scales(lines[0]).get(task_name) != want:
            raise SystemExit(
                f"--results: {path} was measured with other versions ({lines[0] if lines else 'no header'}); "
                f"this run has torch {want[4]}, Optuna {want[5]}: give another folder, or run with the versions it names"
            )
        for line in lines:
            parsed = parse_line(line)
            if parsed is not None and parsed[:2] == (task_name, seed):
                out = parsed[3]
                out["budget"] = round(want[0] * want[1] * args.budget)
                found.setdefault((task_name, seed), {}).setdefault(parsed[2], out)
    return found


def _median(values) -> float:
    return statistics.median(values)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: how often a coin would split the seeds at least this unevenly
    (ties dropped). 9 of 10 seeds gives 0.02; 7 of 10, 0.34: a median over 10 seeds that is
    ahead in 7 of them is not yet evidence."""
    n = wins + losses
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n) if n else 1.0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def row_line(task_name: str, seed: int, strategy: str, out: dict) -> str:
    """A search's line: what ``parse_line`` reads back."""
    reach = out["reach"] if out["reach"] is not None else "-"
    return (
        f"{task_name:<9} {seed:>4} {strategy:<26} {out['trials']:>6} {out['pruned']:>6} {out['epochs']:>6} "
        f"{reach:>12} {out['best_val']:>9.4f} {out['test']:>8.4f} {out['test_third']:>8.4f} "
        f"{out['gap']:>+8.4f} {out['gap_mean']:>+8.4f} {out['seconds']:>5.0f}s"
    )


def parse_line(line: str) -> tuple[str, int, str, dict] | None:
    """(task, seed, strategy, numbers) of a search's line; None for any other line. Lines from
    before the gap column have no gap (NaN); from before gap@mean, a re-evaluated strategy's is
    NaN and any other's is its gap (the same number without re-evaluation)."""
    cols = line.split()
    if len(cols) not in (11, 12, 13) or cols[0] not in TASKS or not cols[1].isdigit() or not cols[-1].endswith("s"):
        return None
    values = cols[3:-1]
    seed = int(cols[1])
    gap = float(values[7]) if len(values) >= 8 else math.nan
    return (
        cols[0],
        seed,
        cols[2],
        {
            "seed": seed,
            "trials": int(values[0]),
            "pruned": int(values[1]),
            "epochs": int(values[2]),
            "reach": None if values[3] == "-" else int(values[3]),
            "best_val": float(values[4]),
            "test": float(values[5]),
            "test_third": float(values[6]),
            "gap": gap,
            "gap_mean": float(values[8]) if len(values) == 9 else (math.nan if "/" in cols[2] else gap),
            "seconds": float(cols[-1][:-1]),
        },
    )


def _print_rows(results: dict, name: str, task_name: str, seed: int, by_strategy: dict[str, dict]) -> None:
    for strategy, out in by_strategy.items():
        line = row_line(task_name, seed, strategy, out)
        print(line, flush=True)
        # the numbers as printed: a run's summary is what --summarize makes of its lines
        as_printed = parse_line(line)[3]
        results.setdefault(name, {}).setdefault(strategy, []).append({**out, **as_printed})


def read_rows(paths: list[str]) -> dict[str, dict[str, list[dict]]]:
    """The per-seed lines of earlier runs' output, files or folders of them (several runs:
    different seeds, or different strategies beside the same grid), as ``main`` collects them;
    a (task, strategy, seed) seen twice keeps its first line."""
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.txt")) if path.is_dir() else [path]
    results: dict[str, dict[str, list[dict]]] = {}
    seen = set()
    for path in files:
        scale: dict[str, tuple] = {}
        for line in path.read_text().splitlines():
            scale = scales(line) or scale  # a header: the scale of the lines below it
            parsed = parse_line(line)
            if parsed is None:
                continue
            task_name, seed, strategy, out = parsed
            name = label(task_name, scale.get(task_name))
            if (name, strategy, seed) in seen:
                continue
            seen.add((name, strategy, seed))
            results.setdefault(name, {}).setdefault(strategy, []).append(out)
    for name, by_strategy in results.items():
        if "grid" not in by_strategy:
            raise SystemExit(f"--summarize: {name} has no grid lines: the grid is the bar")
        grid = {o["seed"]: o["epochs"] for o in by_strategy["grid"]}
        for outs in by_strategy.values():
            for o in outs:
                o["budget"] = grid.get(o["seed"], o["epochs"])
        results[name] = {"grid": by_strategy.pop("grid"), **by_strategy}  # the bar first, as a run prints it
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="comma-separated SAMPLER[+PRUNER] (grid is always run: it is the bar)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--axis-values", type=per_task, default={}, help="keep N values per grid axis: N, or TASK=N,TASK=N"
    )
    parser.add_argument(
        "--epochs", type=per_task, default={}, help="epochs a trial (default: the task's): N, or TASK=N,TASK=N"
    )
    parser.add_argument("--budget", type=float, default=1.0, help="epochs per search, as a multiple of the grid's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker's default on CPU)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    parser.add_argument(
        "--summarize",
        nargs="+",
        metavar="LOG",
        help="run nothing: the summary of earlier runs' output (their per-seed lines; files or folders of them), "
        "e.g. one run per seed range",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="the summary as Markdown tables, 3 decimals (the README's)"
    )
    parser.add_argument(
        "--results",
        metavar="DIR",
        help="keep each search's line in DIR/TASK-SCALE-seed-N.txt as it finishes, and run only the searches DIR "
        "does not hold yet at this scale: rerun the same command to go on after an interruption",
    )
    args = parser.parse_args(argv)
    if args.summarize:
        try:
            results = read_rows(args.summarize)
        except OSError as exc:
            parser.error(f"--summarize: {exc.filename}: {exc.strerror}")
        if not results:
            parser.error("--summarize: no per-seed lines in " + ", ".join(args.summarize))
        _summarize(results, args.budget, args.markdown)
        return
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            parser.error(f"--tasks: unknown task {t!r}; known: {', '.join(TASKS)}")
    try:
        strategies = [strategy_name(s.strip()) for s in args.strategies.split(",") if s.strip()]
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--strategies: {exc}")
    args.strategies = ["grid", *[s for s in strategies if s != "grid"]]

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    args.commit = _commit()  # the code this run loaded, whatever is checked out while it runs
    print(header(tasks, seeds, args))
    jobs = [(t, s) for s in seeds for t in tasks]  # seed by seed: an interrupted run has whole seeds
    have: dict[tuple[str, int], dict[str, dict]] = {}
    if args.results:
        Path(args.results).mkdir(parents=True, exist_ok=True)
        have = stored(args, jobs)
        held = sum(len(set(args.strategies) & set(have.get(job, ()))) for job in jobs)
        print(f"{args.results}: {held} of {len(jobs) * len(args.strategies)} searches held, run only the rest")
    results: dict[str, dict[str, list[dict]]] = {}
    held_by_job = [have.get(job, {}) for job in jobs]
    if args.jobs == 1:
        outs = (run_seed(t, s, args, h) for (t, s), h in zip(jobs, held_by_job, strict=True))
    else:  # a seed's numbers do not depend on which process ran it
        pool = concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
        outs = pool.map(run_seed, [t for t, _ in jobs], [s for _, s in jobs], [args] * len(jobs), held_by_job)
    print(
        f"\n{'task':<9} {'seed':>4} {'strategy':<26} {'trials':>6} {'pruned':>6} {'epochs':>6} "
        f"{'to grid best':>12} {'best val':>9} {'test':>8} {'test@1/3':>8} {'gap':>8} {'gap@mean':>8} {'time':>6}"
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # TERM or Ctrl-C: summarise what finished
    try:
        names = {t: label(t, scale_of(t, args)) for t in tasks}
        for (task_name, seed), by_strategy in zip(jobs, outs, strict=False):
            _print_rows(results, names[task_name], task_name, seed, by_strategy)
    except KeyboardInterrupt:
        print("\ninterrupted: the summary covers the searches that finished", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if results:
        _summarize(results, args.budget, args.markdown)


def _median_of(outs: list[dict], key: str) -> float:
    """The median of a number the older lines may lack (NaN there): of the lines that have it."""
    values = [o[key] for o in outs if not math.isnan(o[key])]
    return _median(values) if values else math.nan


def _signed(value: float, places: int) -> str:
    return "-" if math.isnan(value) else f"{value:+.{places}f}"


def _summarize(results: dict[str, dict[str, list[dict]]], budget_x: float, markdown: bool = False) -> None:
    n_seeds = max(len(outs) for by_strategy in results.values() for outs in by_strategy.values())
    print(f"\nmedian over {n_seeds} seeds; each search spends the grid's epochs x {budget_x:g}")
    for name, by_strategy in results.items():
        budget = by_strategy["grid"][0]["budget"]
        print(f"\n{name} (grid: {by_strategy['grid'][0]['trials']} trials, {budget} epochs)")
        if markdown:
            print(
                f"\n| strategy | test @ {budget} epochs | test @ {round(budget / 3)} | best val | val–test gap "
                "| gap to the reported (mean) val | epochs to the grid's best val (seeds) "
                "| take-home test below the grid's (seeds) | sign test p |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
        else:
            print(
                f"{'strategy':<26} {'test @full':>10} {'test @1/3':>10} {'best val':>9} {'gap':>8} {'gap@mean':>8} "
                f"{'to grid best':>12} {'reached':>8} {'test < grid':>11} {'p':>5}"
            )
        grid_test = {o["seed"]: o["test"] for o in by_strategy["grid"]}
        ordered = sorted(by_strategy.items(), key=lambda item: is_baseline(item[0]))  # the baselines last
        for strategy, outs in ordered:
            paired = [o for o in outs if o["seed"] in grid_test]
            wins = sum(o["test"] < grid_test[o["seed"]] for o in paired)
            losses = sum(o["test"] > grid_test[o["seed"]] for o in paired)
            below = "-" if strategy == "grid" else f"{wins}/{len(paired)}"
            p = "-" if strategy == "grid" else f"{sign_test(wins, losses):.2f}"
            gap, gap_mean = (_median_of(outs, key) for key in ("gap", "gap_mean"))
            reach = _median([o["reach"] if o["reach"] is not None else math.inf for o in outs])
            shown = f"{reach:.0f}" if math.isfinite(reach) else f">{budget}"
            reached = f"{sum(o['reach'] is not None for o in outs)}/{len(outs)}"
            if is_baseline(strategy):  # fitted, not searched
                shown, reached = "-", "-"
            test, third = _median([o["test"] for o in outs]), _median([o["test_third"] for o in outs])
            best_val = _median([o["best_val"] for o in outs])
            if markdown:
                print(
                    f"| {strategy} | {test:.3f} | {third:.3f} | {best_val:.3f} | {_signed(gap, 3)} | {_signed(gap_mean, 3)} "
                    f"| {shown.replace('>', '> ')} ({reached}) | {below} | {p} |"
                )
            else:
                print(
                    f"{strategy:<26} {test:>10.4f} {third:>10.4f} {best_val:>9.4f} {_signed(gap, 4):>8} {_signed(gap_mean, 4):>8} "
                    f"{shown:>12} "
                    f"{reached:>8} {below:>11} {p:>5}"
                )
        for line in verdicts(by_strategy):
            print(f"\n{line}" if markdown else line)


def verdicts(by_strategy: dict[str, list[dict]]) -> list[str]:
    """One line per searched strategy: does its median take-home test loss beat the best
    baseline's (the baseline with the lowest median test loss), and in how many seeds it beat
    that seed's best baseline (the study result's own verdict, seed by seed)."""
    baselines = {k: v for k, v in by_strategy.items() if is_baseline(k)}
    if not baselines:
        return []
    best = min(baselines, key=lambda k: _median([o["test"] for o in baselines[k]]))
    bar = _median([o["test"] for o in baselines[best]])
    per_seed: dict[int, float] = {}
    for outs in baselines.values():
        for o in outs:
            per_seed[o["seed"]] = min(per_seed.get(o["seed"], math.inf), o["test"])
    lines = []
    for strategy, outs in by_strategy.items():
        if is_baseline(strategy):
            continue
        test = _median([o["test"] for o in outs])
        paired = [o for o in outs if o["seed"] in per_seed]
        wins = sum(o["test"] < per_seed[o["seed"]] for o in paired)
        verb = "beats" if test < bar else "does NOT beat"
        lines.append(
            f"vs baselines: {strategy} {verb} the best baseline ({best.removeprefix('baseline:')}): median test "
            f"{test:.4f} vs {bar:.4f} ({(test - bar) / bar:+.1%}); below that seed's best baseline in {wins}/{len(paired)} seeds"
        )
    return lines


if __name__ == "__main__":
    main()
