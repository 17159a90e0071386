"""The three ways to bring your own training, end to end on PostgreSQL with two real workers.

Worker B has no plugins and no command directory; worker A has the test plugins installed (its
PYTHONPATH holds tests/plugin_helpers.py's distribution) and ``--allow-commands`` for one folder.
While only B runs, the three studies wait and say why; B never claims them. Once A runs, each
study ends with pruned trials: a model plugin (trained by rnntune, finalized, exported and
re-created through its entry point by ``load_model``), an objective plugin, and a command whose
crashing trial fails with its stderr.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
import time

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from rnntune.service.store.tables import TicketRow
from tests.conftest import REPO, rnntune, wait_for
from tests.plugin_helpers import make_plugin_dist

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
from rnntune import params, report

x = params()["x"]
if x >= 1.0:
    raise RuntimeError(f"boom at x={x}")
for step in range(1, 5):
    report(step, x * 10 + 1.0 / step)
"""
PRUNER = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
SPECS = [
    {
        "name": "own-model",
        "data": {"name": "plugin", "plugin": "tiny-sines", "params": {"n": 60}},
        "model": {"plugin": "tiny-gru", "hidden_size": 8},
        "training": {"batch_size": 8},
        "search_space": {"lr": {"type": "float", "low": 1e-7, "high": 0.1, "log": True}},
        # the good one first, so the median pruner has a reference: the others barely move
        "initial_trials": [{"lr": 0.05}, {"lr": 1e-7}, {"lr": 2e-7}],
        "pruner": PRUNER,
        "budget": {"n_trials": 3, "max_epochs": 4},
    },
    {
        "name": "own-objective",
        "objective": {"plugin": "quad"},
        "direction": "minimize",
        "search_space": X,
        "initial_trials": [{"x": 0.0}, {"x": 0.5}, {"x": 0.6}],
        "pruner": PRUNER,
        "budget": {"n_trials": 3},
    },
    {
        "name": "own-command",
        "objective": {"command": ["python", "count.py", "--x", "{x}"], "timeout_s": 120},
        "direction": "minimize",
        "search_space": X,
        "initial_trials": [{"x": 0.0}, {"x": 1.0}, {"x": 0.5}, {"x": 0.6}],  # x = 1.0 crashes
        "sampler": {"name": "random", "seed": 0},
        "pruner": PRUNER,
        "budget": {"n_trials": 4, "max_failed_trials": 3},
    },
]


def test_own_model_objective_and_command_with_two_workers(pg_url, tmp_path):
    site = make_plugin_dist(tmp_path / "site")
    allowed = tmp_path / "scripts"
    allowed.mkdir()
    (allowed / "count.py").write_text(SCRIPT)
    settings = Settings(database_url=pg_url, data_dir=tmp_path / "data", lease_s=90)
    env = {"RNNTUNE_DATABASE_URL": pg_url, "RNNTUNE_POLL_INTERVAL_S": "0.2", "RNNTUNE_TORCH_THREADS": "1"}
    procs = []
    with TestClient(create_app(settings, dashboard=False)) as client:
        try:
            bare = rnntune("worker", env=env)
            procs.append(bare)
            wait_for(lambda: len(client.get("/v1/workers").json()["items"]) == 1, 60, what="worker B")
            for spec in SPECS:
                assert client.post("/v1/studies", json=spec).status_code == 201, spec["name"]
            time.sleep(3)  # B polls every 0.2 s: fifteen chances to claim what it cannot run
            for spec in SPECS:
                body = client.get(f"/v1/studies/{spec['name']}").json()
                assert body["state"] == "queued" and body["counts"]["running"] == 0, body
                assert body["reason"].startswith("waiting: no live worker can run it (needs "), body["reason"]
            assert "runs commands" not in str(client.get("/v1/workers").json())

            full = rnntune(
                "worker",
                "--allow-commands",
                str(allowed),
                env=env | {"PYTHONPATH": os.pathsep.join([str(REPO), str(site)])},
            )
            procs.append(full)
            plugins = wait_for(lambda: _plugins(client), 60, what="worker A's plugins")
            assert plugins["workers"] == 2 and plugins["command_workers"] == 1
            assert {("rnntune.models", "tiny-gru", "rnntune-test-plugins", "0.1", 1)} <= {
                (p["group"], p["name"], p["distribution"], p["version"], p["workers"]) for p in plugins["items"]
            }
            for spec in SPECS:
                wait_for(lambda n=spec["name"]: _ended(client, n), 240, what=f"{spec['name']} to end")

            storage = optuna.storages.RDBStorage(pg_url)
            for spec in SPECS:
                body = client.get(f"/v1/studies/{spec['name']}").json()
                assert body["state"] == "done", body
                assert body["finished"] == spec["budget"]["n_trials"]
                assert body["counts"]["pruned"] >= 1, body  # pruning works on every route
            for name in ("own-objective", "own-command"):
                assert client.get(f"/v1/studies/{name}").json()["counts"]["pruned"] >= 2

            # the crashing child: a failed trial whose reason holds its stderr
            trials = optuna.load_study(study_name="own-command", storage=storage).trials
            failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
            assert len(failed) == 1 and failed[0].params == {"x": 1.0}
            assert "RuntimeError: boom at x=1.0" in failed[0].user_attrs["error"]
            # a pruned child reported once and was stopped there
            pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
            assert all(len(t.intermediate_values) == 1 for t in pruned)

            # worker B claimed none of them
            with sa.create_engine(pg_url).connect() as c:
                owners = set(c.scalars(sa.select(TicketRow.worker_id).where(TicketRow.worker_id.is_not(None))))
            assert owners and all(f"-{full.pid}-" in w for w in owners), owners

            # the model plugin's study: finalized, exported, re-created through the entry point
            r = client.get("/v1/studies/own-model/best/model")
            assert r.status_code == 200
            sys.path.insert(0, str(site))
            importlib.invalidate_caches()
            try:
                import numpy as np

                from rnntune import load_model

                predictor = load_model(io.BytesIO(r.content), device="cpu")
                assert type(predictor.model).__name__ == "TinyGRU"
                assert predictor.predict(np.zeros((2, 8, 1))).shape == (2, 1)
            finally:
                sys.path.remove(str(site))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)


def _plugins(client) -> dict | None:
    body = client.get("/v1/plugins").json()
    return body if body["workers"] == 2 and body["items"] else None


def _ended(client, name: str) -> bool:
    return client.get(f"/v1/studies/{name}").json()["state"] in ("done", "failed", "cancelled")
