"""The queue, the data-set guard, the API and the metrics read a study's stored spec as a
StudySpec (``spec.stored_spec``), never as a dict: on PostgreSQL, a study is registered from a
parsed spec, and a stored spec with keys this version does not know (a newer version's) or
without the fields added since (an older one's) is still listed, guarded and measured."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import sqlalchemy as sa

from rnntune.service import queue
from rnntune.service.spec import parse_spec
from rnntune.service.store.tables import StudyRow, TicketRow
from tests.service.test_dataset_uploads import csv_spec, series_csv, upload


@pytest.fixture(scope="module")
def db_url(pg_url):
    return pg_url


def test_add_study_registers_a_parsed_spec(client):
    spec = parse_spec(
        {
            "name": "typed-add",
            "data": {"name": "plugin", "plugin": "tiny-sines"},
            "model": {"plugin": "tiny-gru", "width": 3},
            "budget": {"n_trials": 3, "max_parallel": 2, "timeout_s": 60, "max_failed_trials": 4},
            "labels": ["gpu"],
            "priority": 7,
        }
    )
    with client.app.state.sessions() as s:
        row = queue.add_study(s, spec=spec, optuna_study_id=10**6, spec_hash="h" * 64)
        assert (row.name, row.priority, row.labels, row.n_trials) == ("typed-add", 7, ["gpu"], 3)
        assert (row.max_parallel, row.timeout_s, row.max_failed) == (2, 60.0, 4)
        assert row.requires == {"plugins": ["rnntune.models:tiny-gru", "rnntune.datasets:tiny-sines"]}
        assert row.spec == spec.model_dump(mode="json") and parse_spec(row.spec) == spec
        assert s.scalar(sa.select(sa.func.count()).where(TicketRow.study_id == row.id)) == 3
        s.rollback()
    command = parse_spec({"name": "typed-cmd", "objective": {"command": ["train.py", "--lr", "{lr}"]},
                          "metric": "score", "direction": "maximize",
                          "search_space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
                          "budget": {"n_trials": 1}})  # fmt: skip
    with client.app.state.sessions() as s:
        row = queue.add_study(s, spec=command, optuna_study_id=10**6 + 1, spec_hash="c" * 64)
        assert row.requires == {"command": "train.py"} and row.spec["objective"]["command"][0] == "train.py"
        s.rollback()


def _restore(client, name: str, change) -> None:
    """Rewrite a study's stored spec as another version would have stored it (a new digest, as a
    changed spec has: the parsed-spec cache is keyed by it)."""
    with client.app.state.sessions() as s:
        row = s.scalar(sa.select(StudyRow).where(StudyRow.name == name))
        spec = copy.deepcopy(row.spec)
        change(spec)
        row.spec, row.spec_hash = spec, hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        s.commit()


def test_a_stored_spec_of_another_version_is_listed_guarded_and_measured(client):
    assert upload(client, series_csv(80), "kept.csv").status_code == 201
    for name in ("from-newer", "from-older"):
        assert client.post("/v1/studies", json=csv_spec(name, "kept") | {"labels": ["nowhere"]}).status_code == 201

    def newer(spec):
        spec["ensemble"] = {"members": 2}
        spec["data"]["shuffle"] = False
        spec["budget"]["n_trials"] = 2

    def older(spec):
        for key in ("objective", "objectives", "selection", "labels", "priority", "description"):
            del spec[key]
        del spec["data"]["plugin"]

    _restore(client, "from-newer", newer)
    _restore(client, "from-older", older)
    r = client.get("/v1/studies/from-newer")
    assert r.status_code == 200 and r.json()["spec"]["ensemble"] == {"members": 2}  # published as stored
    assert r.json()["data"] == "csv" and r.json()["direction"] == "minimize"
    assert {s["name"] for s in client.get("/v1/studies").json()["items"]} >= {"from-newer", "from-older"}
    r = client.delete("/v1/datasets/kept")  # the guard reads each unfinished study's data.dataset
    assert r.status_code == 409 and "from-newer" in r.json()["detail"] and "from-older" in r.json()["detail"]
    metrics = client.get("/metrics").text
    assert 'rnntune_queue_depth{study="from-newer"}' in metrics and 'rnntune_queue_depth{study="from-older"}' in metrics
    for name in ("from-newer", "from-older"):
        assert client.post(f"/v1/studies/{name}/cancel").status_code == 200
    assert client.delete("/v1/datasets/kept").status_code == 204
