"""End to end with real processes: `rnntune api`, `rnntune worker` x N, `rnntune submit --wait`.

On PostgreSQL two workers share one study (one of them started late); on SQLite one worker does
it all. Afterwards the study must hold exactly ``n_trials`` finished trials with unique numbers,
every one with its per-epoch values, at least one pruned, and the API's best trial must be
Optuna's own ``study.best_trial``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import httpx2
import optuna
import pytest
import yaml

from tests.conftest import rnntune, wait_for

GOOD = {"hidden_size": 16, "lr": 1.0e-2, "optimizer": "adam"}
BAD = {"hidden_size": 4, "lr": 1.0e-4, "optimizer": "sgd"}  # barely moves in 4 epochs: pruned
N_TRIALS = 8


def study_spec(name: str) -> dict:
    return {
        "name": name,
        "data": {"name": "sine", "params": {"n_series": 80, "length": 30, "seed": 1}, "window": 16},
        "model": {"cell": "gru"},
        "search_space": {
            "hidden_size": {"type": "int", "low": 4, "high": 32, "log": True},
            "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
        },
        # Two good configurations run first, so the median pruner has a reference before the
        # deliberately bad ones start, whatever the interleaving of the workers.
        "initial_trials": [GOOD, GOOD | {"hidden_size": 24}, BAD, BAD | {"hidden_size": 5}],
        "sampler": {"name": "tpe", "seed": 3, "n_startup_trials": 2},
        "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        "budget": {"n_trials": N_TRIALS, "max_epochs": 4},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(db_url: str, port: int) -> subprocess.Popen:
    proc = rnntune("api", "--port", str(port), env={"RNNTUNE_DATABASE_URL": db_url})
    wait_for(lambda: _healthy(port), 60, what="the API to answer /healthz")
    return proc


def _healthy(port: int) -> bool:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def _started(client, name: str) -> dict | None:
    from datetime import datetime

    r = client.get(f"/v1/studies/{name}")
    if r.status_code != 200 or r.json()["started_at"] is None:
        return None
    return {k: datetime.fromisoformat(r.json()[k]) for k in ("created_at", "started_at")}


def stop(*procs: subprocess.Popen) -> list[int]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    return [p.wait(timeout=30) for p in procs]


def run_study(db_url: str, tmp_path, name: str, n_workers: int) -> tuple[dict, str]:
    port = free_port()
    env = {"RNNTUNE_DATABASE_URL": db_url, "RNNTUNE_POLL_INTERVAL_S": "0.5"}
    api = start_api(db_url, port)
    first = rnntune("worker", "--threads", "1", env=env)
    late: list[subprocess.Popen] = []
    try:
        client = httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        time.sleep(3)  # the worker is up and idle before the study exists
        spec_path = tmp_path / f"{name}.yaml"
        spec_path.write_text(yaml.safe_dump(study_spec(name)))
        submit = rnntune(
            "submit",
            str(spec_path),
            "--wait",
            "--api-url",
            f"http://127.0.0.1:{port}",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # An idle worker starts a new study within a couple of seconds of its creation.
        started = wait_for(lambda: _started(client, name), 30, 0.1, "the study to start")
        assert (started["started_at"] - started["created_at"]).total_seconds() < 3, started
        late = [rnntune("worker", "--threads", "1", env=env) for _ in range(n_workers - 1)]
        out, _ = submit.communicate(timeout=240)
        assert submit.returncode == 0, out
        study = client.get(f"/v1/studies/{name}").json()
    finally:
        codes = stop(first, *late, api)
    assert codes[:n_workers] == [0] * n_workers, f"workers exited with {codes}"
    return study, out


def check_study(db_url: str, name: str, api_view: dict, out: str) -> None:
    study = optuna.load_study(study_name=name, storage=db_url)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == N_TRIALS == len(trials), states
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    assert len({t.number for t in trials}) == len(trials)
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in trials), states
    for t in finished:
        assert t.intermediate_values, f"trial {t.number} has no per-epoch values"
        assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
    assert api_view["state"] == "done" and api_view["finished"] == N_TRIALS
    assert api_view["best_trial"]["number"] == study.best_trial.number
    assert api_view["best_trial"]["value"] == pytest.approx(study.best_value)
    assert api_view["best_trial"]["params"] == study.best_trial.params
    assert f"{N_TRIALS}/{N_TRIALS} finished" in out and f"best trial #{study.best_trial.number}" in out


@pytest.mark.slow
def test_two_workers_on_postgres(pg_url, tmp_path):
    api_view, out = run_study(pg_url, tmp_path, "e2e-pg", n_workers=2)
    check_study(pg_url, "e2e-pg", api_view, out)
    # Both workers registered and deregistered cleanly.
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        workers = conn.execute(sa.text("SELECT state FROM rnntune_workers")).scalars().all()
        leasers = conn.execute(sa.text("SELECT count(DISTINCT worker_id) FROM rnntune_tickets")).scalar()
    engine.dispose()
    assert workers == ["stopped", "stopped"]
    assert leasers >= 1


@pytest.mark.slow
def test_one_worker_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    api_view, out = run_study(url, tmp_path, "e2e-sqlite", n_workers=1)
    check_study(url, "e2e-sqlite", api_view, out)
