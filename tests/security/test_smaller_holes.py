"""Attacks 6 and 9 of the second pass: ``initial_trials`` amplification and the smaller holes.

Each was a 500 (or a silent failure later) on the API; each is now a 4xx naming the field and
the limit, or the right study, at submit.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings


@pytest.fixture(scope="module")
def settings(pg_url, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "evil.py").write_text("print('rnntune-objective: 1')\n")
    (allowed / "evil.py").symlink_to(outside / "evil.py")
    (allowed / "good.py").write_text("print('rnntune-objective: 1')\n")
    return Settings(database_url=pg_url, command_dirs=str(allowed))


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings, dashboard=False)) as c:
        yield c


def spec(name: str, **extra) -> dict:
    return {
        "name": name,
        "data": {"name": "sine", "params": {"n_series": 20, "length": 20}, "window": 8},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1}},
        "budget": {"n_trials": 5, "max_epochs": 1},
        **extra,
    }


def detail(r) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"][1:]), e["msg"]) for e in r.json()["detail"]]


def test_initial_trials_are_a_limit(client):
    started = time.perf_counter()
    r = client.post("/v1/studies", json=spec("amplified", initial_trials=[{}] * 3000, budget={"n_trials": 3000}))
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_INITIAL_TRIALS=1000" in r.text
    assert time.perf_counter() - started < 5


def test_duplicate_initial_trials_are_enqueued_once(client, settings):
    trials = [{"lr": 0.01}, {}, {"lr": 0.01}, {}, {"lr": 0.02}]
    r = client.post("/v1/studies", json=spec("duplicates", initial_trials=trials))
    assert r.status_code == 201, r.text
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:  # the first tickets carry them, in order, each once
        rows = conn.execute(
            sa.text(
                "SELECT t.params FROM rnntune_tickets t JOIN rnntune_studies s ON s.id = t.study_id "
                "WHERE s.name = 'duplicates' ORDER BY t.seq"
            )
        ).scalars()
        queued = [json.loads(p) if isinstance(p, str) else p for p in rows]
    engine.dispose()
    assert [p for p in queued if p is not None] == [{"lr": 0.01}, {}, {"lr": 0.02}]


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"name": "trailing\n"}, "name", "must match"),
        ({"priority": 2**40}, "priority", "less than or equal"),
        ({"budget": {"n_trials": 5, "max_parallel": 1e30}}, "budget.max_parallel", ""),
        ({"budget": {"n_trials": 5, "max_parallel": 2**40}}, "budget.max_parallel", "less than or equal"),
        ({"budget": {"n_trials": 5, "max_failed_trials": 2**40}}, "budget.max_failed_trials", "less than or equal"),
        ({"seed": -1}, "seed", "greater than or equal"),
        ({"sampler": {"name": "tpe", "gamma": 5}}, "sampler.gamma", "cannot give"),
        ({"sampler": {"name": "tpe", "n_startup_trials": 2.5}}, "sampler.n_startup_trials", "integer"),
        ({"pruner": {"name": "successive_halving", "min_resource": 5e-324}}, "pruner.min_resource", "integer"),
        ({"pruner": {"name": "hyperband", "reduction_factor": 1.5}}, "pruner.reduction_factor", "integer"),
        ({"pruner": {"name": "percentile", "percentile": 150}}, "pruner.percentile", "in [0, 100]"),
        ({"sampler": {"name": "genetic", "mutation_prob": 2.0}}, "sampler.mutation_prob", "in [0, 1]"),
    ],
)
def test_out_of_range_values_are_422_naming_the_field(client, extra, field, reason):
    r = client.post("/v1/studies", json={**spec("holes"), **extra})
    assert r.status_code == 422, r.text
    fields = detail(r)
    assert any(f == field and reason in msg for f, msg in fields), fields


def test_a_dataset_name_with_a_trailing_newline_is_refused(client):
    r = client.post("/v1/datasets", files={"file": ("a.csv", b"v\n1\n2\n")}, data={"name": "series\n"})
    assert r.status_code == 422, r.text
    assert client.get("/v1/datasets").json()["items"] == []


def test_a_structured_y_is_422(client):
    buffer = io.BytesIO()
    y = np.zeros(4, dtype=[("a", "<i4"), ("b", "<f4")])
    np.savez(buffer, X=np.zeros((4, 3, 1), dtype=np.float32), y=y)
    r = client.post("/v1/datasets", files={"file": ("structured.npz", buffer.getvalue())})
    assert r.status_code == 422, r.text
    assert "integer labels or floats" in r.json()["detail"]


def test_a_custom_metric_with_an_objective_plugin_is_accepted(client):
    body = {
        "name": "own-metric",
        "metric": "my_score",
        "direction": "maximize",
        "objective": {"plugin": "toy"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"n_trials": 2},
    }
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["direction"] == "maximize" and r.json()["metric"] == "my_score"


def test_a_command_script_that_links_out_of_the_allowed_directory_is_refused(client):
    body = {
        "name": "linked-out",
        "metric": "score",
        "direction": "minimize",
        "objective": {"command": ["python", "evil.py", "--x", "{x}"]},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"n_trials": 2},
    }
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 422, r.text
    assert detail(r)[0][0] == "objective.command" and "symlink" in detail(r)[0][1]
    body["objective"]["command"][1] = "good.py"
    assert client.post("/v1/studies", json={**body, "name": "linked-in"}).status_code == 201
