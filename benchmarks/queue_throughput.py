"""Coordination cost of rnntune's queue, measured side by side with plain Optuna on PostgreSQL.

    python benchmarks/queue_throughput.py                      # all three tables (~10 minutes on 2 cores)
    python benchmarks/queue_throughput.py --only overhead      # or: sleep, peak
    python benchmarks/queue_throughput.py --pgbouncer          # 32 workers, PgBouncer side by side
    RNNTUNE_BENCH_PG=postgresql+psycopg2://postgres@127.0.0.1:5432/postgres python benchmarks/queue_throughput.py

1. overhead: seconds per trial of one ``rnntune`` worker process (claim, one ``optimize`` with
   Optuna's heartbeat, lease check, complete) against one plain ``study.optimize`` process, same
   trivial objective, same sampler, same database; medians of alternating runs. Target <= 1.25x.
2. sleep: trials/s of N ``rnntune`` worker processes on a 1 s sleep objective against the ideal
   N x one worker, end to end and steady (each worker from its first completion to its last).
   Target >= 0.9x at 16 workers.
3. peak: trials/s with a trivial objective at N processes, rnntune workers next to plain
   ``study.optimize`` processes on one shared study.

4. --pgbouncer (alone): the sleep table's 32-worker row without and with a real PgBouncer
   (tests/pgbouncer.py: Debian's pgbouncer, transaction pooling, 16 server connections) between
   the workers and PostgreSQL, each against its own ideal (32 x one worker by the same path), with
   the most server connections the workers held (pg_stat_activity, sampled every 0.1 s).
   Target: <= 16 server connections and >= 0.9x the ideal through PgBouncer. Plain Optuna's
   ratio (n processes of study.optimize by the same path against n x one) is the bar: what the
   machine allows any Optuna-based worker doing the same bookkeeping. The direct run
   needs more than PostgreSQL's default max_connections=100 (32 workers x 3-4): point
   RNNTUNE_BENCH_PG at a server of your own with max_connections=300 (docs/benchmarks.md: the command).

Each configuration gets a fresh database on the server; worker processes are started first and
timed from the study's first claim to its last completion (process start-up is not counted).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
import sqlalchemy as sa

from benchmarks._pg import ADMIN, drop_db, new_db

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec_dict(name: str, n_trials: int, sampler: str) -> dict:
    return {
        "name": name,
        "data": {"name": "sine", "params": {"n_series": 4, "length": 12, "seed": 0}, "window": 4},
        "search_space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "hidden_size": {"type": "int", "low": 4, "high": 64},
        },
        "sampler": {"name": sampler, "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials, "max_epochs": 1},
    }


def settings_for(url: str):
    from rnntune.service.config import Settings

    return Settings(database_url=url, poll_interval_s=0.05)


def create_study(url: str, n_trials: int, sampler: str) -> str:
    from rnntune.service.spec import parse_spec
    from rnntune.service.store.db import init_db, make_engine, make_storage, session_factory
    from rnntune.service.studies import registry

    settings = settings_for(url)
    engine = make_engine(settings)
    init_db(engine)
    with session_factory(engine)() as s:
        registry.create_study(s, make_storage(settings), parse_spec(spec_dict("bench", n_trials, sampler)))
    engine.dispose()
    return "bench"


def make_objective(sleep_s: float):
    from rnntune.service.trials.objective import Objective

    class BenchObjective(Objective):
        """The worker's real objective path (suggest, lease check) with training replaced."""

        def _train(self, trial, hp):
            if sleep_s:
                time.sleep(sleep_s)
            return (hp["lr"] - 0.01) ** 2 + hp["hidden_size"] * 1e-6

    return BenchObjective


def trivial(trial: optuna.Trial, sleep_s: float = 0.0) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    hidden = trial.suggest_int("hidden_size", 4, 64)
    if sleep_s:
        time.sleep(sleep_s)
    return (lr - 0.01) ** 2 + hidden * 1e-6


# --- processes ------------------------------------------------------------------------------


def _worker_proc(url: str, sleep_s: float, ready) -> None:
    os.environ["PGAPPNAME"] = "rnntune-worker"  # counted by _sample_connections, unlike the bench's own
    import torch

    from rnntune.service.worker import Worker

    torch.set_num_threads(1)
    w = Worker(settings_for(url), objective_factory=make_objective(sleep_s), exit_when_idle=False)
    w.install_signal_handlers()
    ready.set()
    w.run()


def _plain_proc(url: str, n: int, sleep_s: float, sampler: str, start) -> None:
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_size": 2, "max_overflow": 2})
    s = (
        optuna.samplers.TPESampler(seed=os.getpid())
        if sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=os.getpid())
    )
    study = optuna.load_study(study_name="plain", storage=storage, sampler=s)
    start.wait()
    study.optimize(lambda t: trivial(t, sleep_s), n_trials=n)


def run_workers(n_procs: int, n_trials: int, sleep_s: float, sampler: str) -> float:
    """trials/s of ``n_procs`` rnntune worker processes, first claim to last completion."""
    return run_workers_timed(n_procs, n_trials, sleep_s, sampler)["rate"]


def run_workers_timed(n_procs: int, n_trials: int, sleep_s: float, sampler: str, bouncer=None) -> dict:
    """trials/s of ``n_procs`` rnntune worker processes: ``rate`` from the first claim to the last
    completion; ``steady`` summed over the workers, each from its first completion to its last
    (what the workers sustain once each has run a trial: no start-up, no idle tail). With
    ``bouncer`` (a tests.pgbouncer.PgBouncer) the workers connect through it; ``server_conns`` is
    the most connections to the database that the workers held at once."""
    url = new_db()
    try:
        ctx = mp.get_context("spawn")
        ready = [ctx.Event() for _ in range(n_procs)]
        settings_for(url)
        from rnntune.service.store.db import init_db, make_engine

        eng = make_engine(settings_for(url))
        init_db(eng)
        worker_url = bouncer.url_for(url) if bouncer is not None else url
        sampler_stop, peak_conns = _sample_connections(url)
        procs = [ctx.Process(target=_worker_proc, args=(worker_url, sleep_s, ready[i])) for i in range(n_procs)]
        for p in procs:
            p.start()
        for r in ready:
            r.wait(120)
        time.sleep(1.0)  # let them all reach their idle poll
        create_study(url, n_trials, sampler)
        with eng.connect() as c:
            while c.execute(sa.text("SELECT state FROM rnntune_studies")).scalar() != "done":
                time.sleep(0.05)
                c.rollback()
            first, last, n = c.execute(
                sa.text("SELECT min(started_at), max(finished_at), count(*) FROM rnntune_tickets WHERE kind='trial'")
            ).one()
            per_worker = c.execute(
                sa.text(
                    "SELECT count(*), min(finished_at), max(finished_at) FROM rnntune_tickets "
                    "WHERE kind='trial' GROUP BY worker_id"
                )
            ).all()
        sampler_stop.set()
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(30)
        eng.dispose()
        steady = sum((k - 1) / (b - a).total_seconds() for k, a, b in per_worker if k > 1)
        return {
            "rate": n / (last - first).total_seconds(),
            "steady": steady,
            "seconds": (last - first).total_seconds(),
            "server_conns": peak_conns[0],
        }
    finally:
        drop_db(url)


def _sample_connections(url: str):
    """Every 0.1 s, the client connections to ``url``'s database other than this process's own
    (those of the workers, or of PgBouncer on their behalf; not autovacuum's); returns (stop
    event, [peak])."""
    import threading

    database = url.rsplit("/", 1)[1]
    admin = sa.create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    stop, peak = threading.Event(), [0]
    count = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND backend_type = 'client backend' "
        "AND application_name <> 'rnntune-bench'"
    )

    def run():
        with admin.connect() as c:
            while not stop.wait(0.1):
                peak[0] = max(peak[0], c.execute(count, {"d": database}).scalar())
        admin.dispose()

    threading.Thread(target=run, daemon=True).start()
    return stop, peak


def run_plain(n_procs: int, n_trials: int, sleep_s: float, sampler: str, bouncer=None) -> float:
    """trials/s of ``n_procs`` processes running plain ``study.optimize`` on one study (through
    ``bouncer``, a tests.pgbouncer.PgBouncer, when given)."""
    url = new_db()
    try:
        optuna.create_study(study_name="plain", storage=url)
        ctx = mp.get_context("spawn")
        start = ctx.Event()
        per = [n_trials // n_procs + (i < n_trials % n_procs) for i in range(n_procs)]
        proc_url = bouncer.url_for(url) if bouncer is not None else url
        procs = [
            ctx.Process(target=_plain_proc, args=(proc_url, per[i], sleep_s, sampler, start)) for i in range(n_procs)
        ]
        for p in procs:
            p.start()
        time.sleep(3.0 + 0.2 * n_procs)  # imports and study load
        start.set()
        for p in procs:
            p.join()
        trials = optuna.load_study(study_name="plain", storage=url).get_trials(deepcopy=False)
        first = min(t.datetime_start for t in trials)
        last = max(t.datetime_complete for t in trials)
        return len(trials) / (last - first).total_seconds()
    finally:
        drop_db(url)


# --- the three tables -------------------------------------------------------------------------


def overhead(n_trials: int, samplers: list[str], repeats: int) -> None:
    """Plain and rnntune runs alternate, ``repeats`` times each; the medians are compared. One
    run of each is at the mercy of the machine's mood (single runs here differed by 1.3x)."""
    print(
        f"\n## 1. per-trial overhead, one process, trivial objective ({n_trials} trials, median of {repeats} alternating runs)"
    )
    print("| sampler | plain study.optimize | rnntune worker | ratio (target <= 1.25x) | runs: plain / rnntune (ms) |")
    print("|---|---|---|---|---|")
    for sampler in samplers:
        plain_ms, ours_ms = [], []
        for _ in range(repeats):
            plain_ms.append(1e3 / run_plain(1, n_trials, 0.0, sampler))
            ours_ms.append(1e3 / run_workers(1, n_trials, 0.0, sampler))
        plain, ours = statistics.median(plain_ms), statistics.median(ours_ms)
        runs = f"{' '.join(f'{v:.1f}' for v in plain_ms)} / {' '.join(f'{v:.1f}' for v in ours_ms)}"
        print(f"| {sampler} | {plain:.1f} ms | {ours:.1f} ms | {ours / plain:.2f}x | {runs} |", flush=True)


def sleep_scaling(counts: list[int], per_worker: int) -> None:
    print(f"\n## 2. 1 s sleep objective, {per_worker} trials per worker: throughput against the ideal N x one worker")
    print("end to end: first claim to last completion, so each process's first trial (connections, statement")
    print("compilation, study load: tens of ms of CPU more than later trials, all N at once) counts; steady:")
    print("each worker from its first completion to its last, summed")
    print(
        "| workers | trials | seconds | trials/s | ideal | ratio (target >= 0.9x at 16) | steady trials/s | steady ideal | steady ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    one = None
    for n in counts:
        out = run_workers_timed(n, n * per_worker, 1.0, "random")
        one = one or out
        ideal, steady_ideal = n * one["rate"], n * one["steady"]
        print(
            f"| {n} | {n * per_worker} | {out['seconds']:.2f} | {out['rate']:.2f} | {ideal:.2f} | {out['rate'] / ideal:.2f}x "
            f"| {out['steady']:.2f} | {steady_ideal:.2f} | {out['steady'] / steady_ideal:.2f}x |",
            flush=True,
        )


def peak(counts: list[int], n_trials: int, sampler: str) -> None:
    print(f"\n## 3. peak trials/s, trivial objective, {sampler} sampler, {n_trials} trials per run")
    print("| processes | plain study.optimize | rnntune workers | ratio |")
    print("|---|---|---|---|")
    for n in counts:
        plain = run_plain(n, n_trials, 0.0, sampler)
        ours = run_workers(n, n_trials, 0.0, sampler)
        print(f"| {n} | {plain:.1f} | {ours:.1f} | {ours / plain:.2f}x |", flush=True)


def pgbouncer_side_by_side(n_workers: int, per_worker: int, pool_size: int = 16) -> None:
    """The same 1 s sleep run without and with PgBouncer, each against its own one-worker ideal."""
    from tests.pgbouncer import PgBouncer

    print(
        f"\n## 4. {n_workers} workers, 1 s sleep objective, {per_worker} trials per worker: directly and through "
        f"PgBouncer (transaction pooling, {pool_size} server connections)"
    )
    print("ideal: n x one worker by the same path; server connections: the most the workers held at once;")
    print("plain Optuna: n processes of plain study.optimize, same objective and path, against n x one of them")
    print("(what the machine allows any Optuna-based worker: the bar for rnntune's ratio)")
    print(
        "| path | workers | trials | seconds | trials/s | ideal | ratio (target >= 0.9x) | steady ratio "
        "| server connections | plain Optuna ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    upstream = sa.engine.make_url(ADMIN)
    with PgBouncer(pool_size=pool_size, upstream_host=upstream.host, upstream_port=upstream.port or 5432) as bouncer:
        for path, via in (("direct", None), ("PgBouncer", bouncer)):
            one = run_workers_timed(1, per_worker, 1.0, "random", bouncer=via)
            out = run_workers_timed(n_workers, n_workers * per_worker, 1.0, "random", bouncer=via)
            ideal, steady_ideal = n_workers * one["rate"], n_workers * one["steady"]
            plain_one = run_plain(1, per_worker, 1.0, "random", bouncer=via)
            plain = run_plain(n_workers, n_workers * per_worker, 1.0, "random", bouncer=via)
            print(
                f"| {path} | {n_workers} | {n_workers * per_worker} | {out['seconds']:.2f} | {out['rate']:.2f} | "
                f"{ideal:.2f} | {out['rate'] / ideal:.2f}x | {out['steady'] / steady_ideal:.2f}x | {out['server_conns']} "
                f"| {plain / (n_workers * plain_one):.2f}x |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["overhead", "sleep", "peak"])
    ap.add_argument("--counts", default="1,2,4,8,16")
    ap.add_argument("--trials", type=int, default=200, help="trials per overhead / peak run")
    ap.add_argument("--repeats", type=int, default=3, help="overhead: alternating runs of each, medians compared")
    ap.add_argument("--per-worker", type=int, default=10, help="sleep: trials per worker")
    ap.add_argument("--pgbouncer", action="store_true", help="only table 4: 32 workers without and with PgBouncer")
    ap.add_argument("--pgbouncer-workers", type=int, default=32, help="--pgbouncer: worker processes")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    print(f"# benchmarks/queue_throughput.py on {os.cpu_count()} cores, optuna {optuna.__version__}, PostgreSQL")
    if args.pgbouncer:
        os.environ["PGAPPNAME"] = "rnntune-bench"  # this process's connections are not the workers'
        pgbouncer_side_by_side(args.pgbouncer_workers, args.per_worker)
        return
    if args.only in (None, "overhead"):
        overhead(args.trials, ["random", "tpe"], args.repeats)
    if args.only in (None, "sleep"):
        sleep_scaling(counts, per_worker=args.per_worker)
    if args.only in (None, "peak"):
        for sampler in ("random", "tpe"):
            peak(counts, args.trials, sampler)


if __name__ == "__main__":
    main()
