"""Warm start on sunspots: a study started from an earlier one (``warm_start``) vs a cold one.

Per seed s, an earlier study ("before": TPE, sampler and training seed s) runs --before trials.
Then two new studies run --after trials each, with another training seed (s + 1000), so that
re-running the earlier winner is not a copy of its value (the same configuration scores a little
differently on a new seed, as it would on next week's data):

    cold   TPE from scratch (sampler seed s + 500)
    warm   the same, plus ``warm_start: {from: [before], top_k: --top-k}``: its first tickets
           carry the earlier study's best trials, and TPE's history holds all its complete trials

Reported per seed and as the median over seeds: the trials each new study needed until its best
val loss was within --tolerance of the earlier study's best (a study that never got there within
--after trials counts as --after + 1, shown as ">N"), and the ratio cold / warm.

It runs the service's own path: ``registry.create_study`` with ``warm_start.plan`` on a SQLite
database (tickets, history), each ticket's params pinned (``search.pinned_sampler``, as a worker
does) and ``objective.Objective`` training; no queue or worker processes.

    .venv/bin/python benchmarks/warm_start.py                      # 5 seeds, ~3 min on 2 busy cores
    .venv/bin/python benchmarks/warm_start.py --seeds 10 --tolerance 0
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import optuna  # noqa: E402

from rnntune.service.config import Settings  # noqa: E402
from rnntune.service.data.data_cache import DataCache  # noqa: E402
from rnntune.service.search import build_pruner, build_sampler, pinned_sampler  # noqa: E402
from rnntune.service.spec import parse_spec  # noqa: E402
from rnntune.service.store.db import init_db, make_engine, make_storage, session_factory  # noqa: E402
from rnntune.service.store.tables import StudyRow, TicketRow  # noqa: E402
from rnntune.service.studies import registry, warm_start  # noqa: E402
from rnntune.service.trials.objective import Objective  # noqa: E402

SPACE = {
    "hidden_size": {"type": "int", "low": 8, "high": 64, "log": True},
    "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
}


def make_spec(name: str, *, sampler_seed: int, seed: int, n_trials: int, args, warm: list[str] | None = None):
    spec = {
        "name": name,
        "data": {"name": "sunspots", "window": 24},
        "model": {"cell": "gru"},
        "search_space": SPACE,
        "sampler": {"name": "tpe", "seed": sampler_seed, "n_startup_trials": args.startup},
        "pruner": {"name": "none"},
        "seed": seed,
        "budget": {"n_trials": n_trials, "max_epochs": args.epochs},
    }
    if warm:
        spec["warm_start"] = {"from": warm, "top_k": args.top_k}
    return parse_spec(spec)


def run_study(sessions, storage, spec, cache: DataCache) -> list[float]:
    """Create the study as the API does (a warm start planned first), then run its tickets in
    order, each ticket's params pinned as a worker pins them. Returns its own trials' values."""
    with sessions() as session:
        plan, errors = warm_start.plan(session, spec, max_history=1000)
        assert not errors, errors
        row, _ = registry.create_study(session, storage, spec, warm=plan if spec.warm_start else None)
        tickets = session.query(TicketRow.params).filter(TicketRow.study_id == row.id).order_by(TicketRow.seq).all()
        session.query(StudyRow).filter(StudyRow.id == row.id).update({"state": "cancelled"})  # ours to run
        session.commit()
    base = build_sampler(spec, seed_offset=0)
    objective = Objective(spec, device="cpu", data_cache=cache)
    values = []
    for (params,) in tickets:
        study = optuna.load_study(
            study_name=spec.name,
            storage=storage,
            sampler=pinned_sampler(base, params) if params else base,
            pruner=build_pruner(spec),
        )
        study.optimize(objective, n_trials=1)
        last = max(study.get_trials(deepcopy=False), key=lambda t: t.number)
        values.append(last.value if last.state == optuna.trial.TrialState.COMPLETE else math.inf)
    return values


def trials_to_reach(values: list[float], target: float) -> int | None:
    best = math.inf
    for i, value in enumerate(values, start=1):
        best = min(best, value)
        if best <= target:
            return i
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--before", type=int, default=12, help="trials of the earlier study")
    parser.add_argument("--after", type=int, default=8, help="trials of each new study")
    parser.add_argument("--top-k", type=int, default=3, help="warm_start.top_k")
    parser.add_argument("--startup", type=int, default=5, help="TPE's n_startup_trials")
    parser.add_argument("--epochs", type=int, default=8, help="max epochs per trial")
    parser.add_argument("--tolerance", type=float, default=0.02, help="reached: best <= earlier best x (1 + this)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    tmp = tempfile.mkdtemp(prefix="rnntune-warm-")
    settings = Settings(database_url=f"sqlite:///{tmp}/bench.db", data_dir=tmp)
    engine = make_engine(settings)
    init_db(engine)
    sessions, storage, cache = session_factory(engine), make_storage(settings), DataCache()
    started = time.perf_counter()
    print(f"sunspots GRU, {args.epochs} epochs, TPE startup {args.startup}; earlier study {args.before} trials,")
    print(f"new studies {args.after} trials on another training seed; warm top_k {args.top_k}")
    print(f"{'seed':>4}  {'earlier best':>12}  {'cold: trials':>12}  {'warm: trials':>12}")
    cold_n, warm_n = [], []
    for s in range(args.seeds):
        before = make_spec(f"before-{s}", sampler_seed=s, seed=s, n_trials=args.before, args=args)
        target = min(run_study(sessions, storage, before, cache)) * (1 + args.tolerance)
        reached = []
        for kind in ("cold", "warm"):
            spec = make_spec(
                f"{kind}-{s}",
                sampler_seed=s + 500,
                seed=s + 1000,
                n_trials=args.after,
                args=args,
                warm=[before.name] if kind == "warm" else None,
            )
            reached.append(trials_to_reach(run_study(sessions, storage, spec, cache), target))
        cold, warm = (r if r is not None else args.after + 1 for r in reached)
        cold_n.append(cold)
        warm_n.append(warm)
        shown = [str(r) if r is not None else f">{args.after}" for r in reached]
        print(f"{s:>4}  {target / (1 + args.tolerance):>12.5f}  {shown[0]:>12}  {shown[1]:>12}", flush=True)
    cold_m, warm_m = statistics.median(cold_n), statistics.median(warm_n)
    print(f"median trials to reach the earlier best (within {args.tolerance:.0%}): cold {cold_m:g}, warm {warm_m:g}")
    print(
        f"ratio cold / warm: {cold_m / warm_m:.2f}x  (mean {statistics.fmean(cold_n) / statistics.fmean(warm_n):.2f}x)"
    )
    print(f"reached within {args.after} trials: cold {sum(n <= args.after for n in cold_n)}/{args.seeds}, "
          f"warm {sum(n <= args.after for n in warm_n)}/{args.seeds}; {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
