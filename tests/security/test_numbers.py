"""Attack 1 of the second pass: NaN / Infinity in a spec, and a stored spec that no longer parses.

NaN passes every ``<`` / ``>`` bound and is stored as JSON ``null``; one that got through made the
study row unreadable, after which the list, ``/metrics``, data-set deletion, cancel and every
worker's claim failed on it. Every number of a spec is now checked at submit, wherever it is, and
a row that is broken anyway (stored by an older version, edited by hand) is shown with its reason,
failed by the first claim that meets it, and never breaks a reader.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from rnntune.service import queue
from rnntune.service.config import Settings
from rnntune.service.store.db import make_engine, session_factory

YAML = {"Content-Type": "application/yaml"}
JSON = {"Content-Type": "application/json"}
SINE = '{"name": "sine", "params": {"n_series": 20, "length": 20}, "window": 8}'


@pytest.fixture(scope="module")
def db_url(pg_url):
    return pg_url


def spec_json(name: str, **parts: str) -> str:
    fields = {"data": SINE, "budget": '{"n_trials": 2, "max_epochs": 1}', **parts}
    return "{" + ", ".join([f'"name": "{name}"', *(f'"{k}": {v}' for k, v in fields.items())]) + "}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (spec_json("a", training='{"lr": NaN}'), "training.lr"),
        (spec_json("b", model='{"dropout": NaN}'), "model.dropout"),
        (spec_json("c", data='{"name": "sine", "params": {"noise": Infinity}}'), "data.params.noise"),
        (
            spec_json("d", search_space='{"lr": {"type": "float", "low": 0.001, "high": Infinity}}'),
            "search_space.lr.high",
        ),
        (spec_json("e", search_space='{"lr": {"type": "float", "low": NaN, "high": 0.1}}'), "search_space.lr.low"),
        (spec_json("f", sampler='{"name": "tpe", "n_startup_trials": NaN}'), "sampler.n_startup_trials"),
        (spec_json("g", pruner='{"name": "median", "n_warmup_steps": -Infinity}'), "pruner.n_warmup_steps"),
        (spec_json("h", budget='{"n_trials": 2, "timeout_s": Infinity}'), "budget.timeout_s"),
        (spec_json("i", budget='{"n_trials": 2, "timeout_s": 1e400}'), "budget.timeout_s"),  # decodes to inf
        (
            spec_json(
                "j",
                search_space='{"lr": {"type": "float", "low": 0.001, "high": 0.1}}',
                initial_trials='[{"lr": NaN}]',
            ),
            "initial_trials[0].lr",
        ),
        (
            spec_json("k", search_space='{"lr": {"type": "categorical", "choices": [0.1, NaN]}}'),
            "search_space.lr.choices[1]",
        ),
    ],
)
def test_json_nan_and_infinity_are_422_naming_the_field(client, body, field):
    json.loads(body)  # (valid JSON to Python's decoder: NaN / Infinity are its extensions)
    r = client.post("/v1/studies", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    locs = [".".join(str(p) for p in e["loc"][1:]) for e in r.json()["detail"]]
    assert field in locs, r.json()
    assert "finite" in r.text
    name = json.loads(body)["name"]
    assert client.get(f"/v1/studies/{name}").status_code == 404  # nothing was stored


def test_yaml_nan_is_422_and_nothing_is_stored(client):
    body = (
        "name: poison\ndata: {name: sine, params: {n_series: 20, length: 20}, window: 8}\n"
        "training: {lr: .nan}\nbudget: {n_trials: 1, max_epochs: 1}\n"
    )
    r = client.post("/v1/studies", content=body, headers=YAML)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "training", "lr"]
    r = client.post("/v1/studies", content=body.replace(".nan", "-.inf"), headers=YAML)
    assert r.status_code == 422, r.text
    assert client.get("/v1/studies/poison").status_code == 404
    assert client.get("/v1/studies").status_code == 200


def _submit(client, name: str, **extra) -> None:
    spec = {
        "name": name,
        "data": {"name": "sine", "params": {"n_series": 20, "length": 20}, "window": 8},
        "training": {"lr": 0.01},
        "budget": {"n_trials": 2, "max_epochs": 1},
        **extra,
    }
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 201, r.text


def _poison(settings: Settings, name: str) -> None:
    """What the attack left on main: the row committed with ``training.lr`` stored as null (and
    a digest no process has parsed yet)."""
    engine = make_engine(settings)
    with engine.begin() as conn:
        spec = conn.scalar(sa.text("SELECT spec FROM rnntune_studies WHERE name = :n"), {"n": name})
        spec = spec if isinstance(spec, dict) else json.loads(spec)
        spec["training"]["lr"] = None
        conn.execute(
            sa.text("UPDATE rnntune_studies SET spec = :s, spec_hash = :h WHERE name = :n"),
            {"s": json.dumps(spec), "h": f"poisoned-{name}", "n": name},
        )
    engine.dispose()


def test_a_poisoned_row_breaks_no_list_metric_cancel_delete_or_claim(client, settings):
    r = client.post("/v1/datasets", files={"file": ("used.csv", b"v\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n")})
    assert r.status_code == 201, r.text
    r = client.post("/v1/datasets", files={"file": ("unused.csv", b"v\n1\n2\n3\n")})
    assert r.status_code == 201, r.text
    _submit(client, "healthy")
    _submit(client, "poisoned", priority=10)  # claimed first, if it were claimable
    _submit(client, "poisoned-too")
    _submit(client, "poisoned-csv", data={"name": "csv", "dataset": "used", "target": "v", "window": 2})
    for name in ("poisoned", "poisoned-too", "poisoned-csv"):
        _poison(settings, name)

    r = client.get("/v1/studies")
    assert r.status_code == 200, r.text
    shown = {s["name"]: s for s in r.json()["items"]}
    assert shown["poisoned"]["state"] == "queued"
    assert "no longer parses" in shown["poisoned"]["reason"] and "lr must be a number" in shown["poisoned"]["reason"]
    assert shown["healthy"]["reason"] is None
    r = client.get("/v1/studies/poisoned")
    assert r.status_code == 200 and r.json()["reason"] == shown["poisoned"]["reason"]
    assert client.get("/v1/studies/poisoned/best").status_code == 409
    assert client.get("/metrics").status_code == 200
    assert client.delete("/v1/datasets/unused").status_code == 204
    r = client.delete("/v1/datasets/used")  # a broken spec still holds the data it names
    assert r.status_code == 409 and "poisoned-csv" in r.text, r.text

    r = client.post("/v1/studies/poisoned-too/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled"

    sessions = session_factory(make_engine(settings))
    with sessions() as session:
        claim = queue.claim(session, "w-test", labels=set(), lease_s=120)
    assert claim is not None and claim.study_name == "healthy"  # the broken studies were skipped
    with sessions() as session:  # and failed, so no worker meets them again
        assert queue.claim(session, "w-test-2", labels=set(), lease_s=120).study_name == "healthy"
    r = client.get("/v1/studies/poisoned")
    assert r.json()["state"] == "failed"
    assert "no longer parses" in r.json()["reason"]
    assert client.get("/v1/studies").status_code == 200
    assert client.get("/metrics").status_code == 200
