"""Latency of the status endpoints at 100, 1,000 and 10,000 finished trials, next to ``study.trials``.

    python benchmarks/api.py                        # 100, 1,000, 10,000 trials (~1.5 minutes on 2 cores)
    python benchmarks/api.py --sizes 10000 --requests 500
    RNNTUNE_BENCH_PG=postgresql+psycopg2://postgres@127.0.0.1:5432/postgres python benchmarks/api.py

For each size: a fresh PostgreSQL database; one study registered through
``rnntune.service.studies.registry.create_study`` (6 searched parameters); N finished trials bulk-inserted into
Optuna's own tables (70% COMPLETE, 30% PRUNED; 6 params, a value, 10 intermediate values, the
user attributes the objective writes: about 24 rows per trial); its tickets marked done. Then
``GET /v1/studies``, ``GET /v1/studies/{name}`` and ``GET /v1/studies/{name}/trials?limit=100``
(and ``GET /metrics``) are timed through an in-process ``fastapi.testclient.TestClient`` (the
whole ASGI stack and a real database round trip; no network), ``--requests`` times each after 5
warm-up requests; ``study.trials`` on a freshly loaded study (cold cache, as a new API process or
request would see it) is timed ``--repeats`` times on the same database.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
import sqlalchemy as sa
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from benchmarks._pg import drop_db, new_db
from rnntune.service.store import optuna_compat as om

optuna.logging.set_verbosity(optuna.logging.WARNING)
NAME = "bench-api"
EPOCHS = 10
DISTRIBUTIONS = {
    "hidden_size": IntDistribution(8, 128, log=True),
    "num_layers": IntDistribution(1, 3),
    "dropout": FloatDistribution(0.0, 0.5),
    "lr": FloatDistribution(1e-4, 3e-2, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "optimizer": CategoricalDistribution(["adam", "sgd", "rmsprop"]),
}


def spec_dict(n_trials: int) -> dict:
    return {
        "name": NAME,
        "data": {"name": "sine", "params": {"n_series": 4, "length": 12, "seed": 0}, "window": 4},
        "search_space": {
            "hidden_size": {"type": "int", "low": 8, "high": 128, "log": True},
            "num_layers": {"type": "int", "low": 1, "high": 3},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
        },
        "sampler": {"name": "tpe", "seed": 0},
        "budget": {"n_trials": n_trials, "max_epochs": EPOCHS},
    }


def fill(url: str, n: int, seed: int = 0) -> float:
    """Register the study and bulk-insert ``n`` finished trials; returns seconds taken."""
    from rnntune.service.config import Settings
    from rnntune.service.spec import parse_spec
    from rnntune.service.store.db import init_db, make_engine, make_storage, session_factory
    from rnntune.service.store.tables import StudyRow, TicketRow
    from rnntune.service.studies import registry

    t0 = time.perf_counter()
    settings = Settings(database_url=url)
    engine = make_engine(settings)
    init_db(engine)
    with session_factory(engine)() as s:
        row, _ = registry.create_study(s, make_storage(settings), parse_spec(spec_dict(n)))
    study_id = row.optuna_study_id
    rng = random.Random(seed)
    TS = optuna.trial.TrialState
    FINITE_V = om.TrialValueModel.TrialValueType.FINITE
    FINITE_I = om.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    dist_json = {k: distribution_to_json(d) for k, d in DISTRIBUTIONS.items()}
    start = datetime(2026, 1, 1)
    trials, plans = [], []
    for number in range(n):
        pruned = rng.random() < 0.3
        epochs = rng.randint(2, EPOCHS - 1) if pruned else EPOCHS
        t_start = start + timedelta(seconds=30 * number)
        trials.append(
            {
                "number": number,
                "study_id": study_id,
                "state": TS.PRUNED if pruned else TS.COMPLETE,
                "datetime_start": t_start,
                "datetime_complete": t_start + timedelta(seconds=2.5 * epochs + rng.random()),
            }
        )
        plans.append((epochs, 0.2 + rng.random()))
    with engine.begin() as c:
        ids = (
            c.execute(
                om.TrialModel.__table__.insert().returning(
                    om.TrialModel.__table__.c.trial_id, sort_by_parameter_order=True
                ),
                trials,
            )
            .scalars()
            .all()
        )
        params, values, inter, attrs = [], [], [], []
        for tid, (epochs, level) in zip(ids, plans, strict=False):
            for name, dist in DISTRIBUTIONS.items():
                if isinstance(dist, CategoricalDistribution):
                    internal = float(rng.randrange(len(dist.choices)))
                elif isinstance(dist, IntDistribution):
                    internal = float(rng.randint(dist.low, dist.high))
                else:
                    internal = rng.uniform(dist.low, dist.high)
                params.append(
                    {"trial_id": tid, "param_name": name, "param_value": internal, "distribution_json": dist_json[name]}
                )
            curve = [level * (1 + 2.0 / (step + 1)) + 0.01 * rng.random() for step in range(epochs)]
            inter += [
                {"trial_id": tid, "step": step, "intermediate_value": v, "intermediate_value_type": FINITE_I}
                for step, v in enumerate(curve)
            ]
            values.append({"trial_id": tid, "objective": 0, "value": min(curve), "value_type": FINITE_V})
            best_epoch = curve.index(min(curve))
            for key, value in (
                ("epochs", epochs),
                ("best_epoch", best_epoch),
                ("stopped", "max_epochs"),
                ("train_seconds", 2.5 * epochs),
            ):
                attrs.append({"trial_id": tid, "key": key, "value_json": json.dumps(value)})
        c.execute(om.TrialParamModel.__table__.insert(), params)
        c.execute(om.TrialValueModel.__table__.insert(), values)
        c.execute(om.TrialIntermediateValueModel.__table__.insert(), inter)
        c.execute(om.TrialUserAttributeModel.__table__.insert(), attrs)
        c.execute(sa.update(TicketRow).where(TicketRow.study_id == row.id).values(state="done", outcome="COMPLETE"))
        c.execute(sa.update(StudyRow).where(StudyRow.id == row.id).values(state="done", started_at=start))
        c.execute(sa.text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - t0


def percentiles(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49], qs[94]


def time_requests(client, path: str, n: int, params: dict | None = None) -> tuple[float, float]:
    for _ in range(5):
        assert client.get(path, params=params).status_code == 200
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path, params=params)
        samples.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return percentiles(samples)


def time_study_trials(url: str, repeats: int) -> float:
    """Median seconds of ``study.trials`` on a freshly loaded study (new storage: cold cache)."""
    samples = []
    for _ in range(repeats):
        storage = optuna.storages.RDBStorage(url)
        study = optuna.load_study(study_name=NAME, storage=storage)
        t = time.perf_counter()
        trials = study.trials
        samples.append(time.perf_counter() - t)
        assert len(trials) >= 1
        storage.engine.dispose()
    return statistics.median(samples)


def run(n: int, requests: int, repeats: int) -> dict:
    from fastapi.testclient import TestClient

    from rnntune.service.api.app import create_app
    from rnntune.service.config import Settings

    url = new_db()
    try:
        fill_s = fill(url, n)
        row = {"n": n, "fill_s": fill_s}
        with TestClient(create_app(Settings(database_url=url), dashboard=False)) as client:
            body = client.get(f"/v1/studies/{NAME}").json()
            assert body["finished"] == n, body
            row["list"] = time_requests(client, "/v1/studies", requests)
            row["detail"] = time_requests(client, f"/v1/studies/{NAME}", requests)
            row["trials"] = time_requests(client, f"/v1/studies/{NAME}/trials", requests, {"limit": 100})
            row["metrics"] = time_requests(client, "/metrics", requests) if _has_metrics(client) else None
        row["study_trials"] = time_study_trials(url, repeats)
        return row
    finally:
        drop_db(url)


def _has_metrics(client) -> bool:
    return client.get("/metrics").status_code == 200


def ms(pair) -> str:
    return "—" if pair is None else f"{pair[0] * 1e3:.1f} / {pair[1] * 1e3:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--requests", type=int, default=200, help="timed requests per endpoint and size")
    ap.add_argument("--repeats", type=int, default=3, help="study.trials timings per size (median)")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(run(n, args.requests, args.repeats))
        print(f"# {n} trials: filled in {rows[-1]['fill_s']:.1f} s", file=sys.stderr, flush=True)
    print(f"\np50 / p95 in ms over {args.requests} requests each (in-process TestClient, PostgreSQL 15 on loopback)\n")
    print(
        "| finished trials | GET /v1/studies | GET /v1/studies/{name} | GET …/trials?limit=100 | GET /metrics | `study.trials` (median, cold) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']:,} | {ms(r['list'])} | {ms(r['detail'])} | {ms(r['trials'])} | {ms(r['metrics'])} "
            f"| {r['study_trials'] * 1e3:,.0f} ms |"
        )


if __name__ == "__main__":
    main()
