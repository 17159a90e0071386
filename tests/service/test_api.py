"""The HTTP API through an in-process client, on real PostgreSQL and on SQLite."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.worker import Worker

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "studies" / "sine-lstm.yaml").read_text())
SPEC["name"] = "api-sine"
SPEC["data"]["params"] = {"n_series": 60, "length": 30, "noise": 0.05, "seed": 0}
SPEC["data"]["window"] = 16
SPEC["budget"] = {"n_trials": 4, "max_epochs": 3}
SPEC["priority"] = 10  # the worker below takes these 4 tickets before any other study's


@pytest.fixture(scope="module")
def client(settings):
    """With the dashboard: some tests here read it."""
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def trained(client, settings):
    """The study created and its trials run by an in-process worker."""
    r = client.post("/v1/studies", json=SPEC)
    assert r.status_code == 201, r.text
    Worker(settings, exit_when_idle=True, max_trials=5, threads=1).run()  # 4 trials + finalize
    return client.get(f"/v1/studies/{SPEC['name']}").json()


def test_create_returns_queued_study_and_repeat_is_idempotent(client):
    spec = copy.deepcopy(SPEC) | {"name": "api-idem", "priority": 0}
    first = client.post("/v1/studies", json=spec)
    assert first.status_code == 201
    body = first.json()
    assert body["state"] == "queued" and body["n_trials"] == 4 and body["finished"] == 0
    assert body["spec"]["sampler"]["name"] == "tpe" and body["best_trial"] is None
    again = client.post("/v1/studies", json=spec)
    assert again.status_code == 200 and again.json()["name"] == "api-idem"


def test_duplicate_name_with_other_spec_is_409(client):
    spec = copy.deepcopy(SPEC) | {"name": "api-dup", "priority": 0}
    assert client.post("/v1/studies", json=spec).status_code == 201
    spec["seed"] = 123
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 409 and "different spec" in r.json()["detail"]


def test_yaml_body_is_accepted(client):
    spec = copy.deepcopy(SPEC) | {"name": "api-yaml", "priority": 0}
    r = client.post("/v1/studies", content=yaml.safe_dump(spec), headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("change", "loc", "reason"),
    [
        ({"budget": {"n_trials": 0}}, ["body", "budget", "n_trials"], "n_trials must be > 0"),
        ({"sampler": {"name": "annealing"}}, ["body", "sampler", "name"], "unknown sampler"),
        (
            {"search_space": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}},
            ["body", "search_space", "lr"],
            "low must be <= high",
        ),
        (
            {"search_space": {"depth": {"type": "int", "low": 1, "high": 3}}},
            ["body", "search_space"],
            "unknown parameter 'depth'",
        ),
    ],
)
def test_bad_spec_is_422_naming_field(client, change, loc, reason):
    r = client.post("/v1/studies", json=copy.deepcopy(SPEC) | {"name": "api-bad"} | change)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any(d["loc"] == loc and reason in d["msg"] for d in detail), detail


def test_malformed_body_is_422(client):
    r = client.post("/v1/studies", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"][0]["msg"]
    assert client.post("/v1/studies", json=[1, 2]).status_code == 422


def test_unknown_study_is_404(client):
    assert client.get("/v1/studies/no-such-study").status_code == 404
    assert client.get("/v1/studies/no-such-study/trials").status_code == 404


def test_trained_study_reports_counts_best_and_curve(trained, client, settings):
    import optuna

    assert trained["state"] == "done"
    counts = trained["counts"]
    assert trained["finished"] == counts["complete"] + counts["pruned"] == 4
    assert counts["running"] == counts["failed"] == 0
    study = optuna.load_study(study_name=SPEC["name"], storage=settings.database_url)
    best = trained["best_trial"]
    assert best["number"] == study.best_trial.number
    assert best["value"] == pytest.approx(study.best_value)
    assert best["params"] == study.best_trial.params
    assert [p["epoch"] for p in best["curve"]] == sorted(study.best_trial.intermediate_values)
    assert study.metric_names == [SPEC["metric"]]  # optuna-dashboard's label, not "Objective 0"
    assert best["curve"][-1]["value"] == pytest.approx(study.best_trial.intermediate_values[best["curve"][-1]["epoch"]])


def test_list_shows_every_study_with_state_and_counts(trained, client):
    items = {s["name"]: s for s in client.get("/v1/studies").json()["items"]}
    assert items[SPEC["name"]]["state"] == "done"
    assert items[SPEC["name"]]["best_value"] == pytest.approx(trained["best_value"])
    assert items["api-idem"]["state"] == "queued" and items["api-idem"]["counts"]["complete"] == 0
    done = client.get("/v1/studies", params={"state": "done"}).json()["items"]
    assert [s["name"] for s in done] == [SPEC["name"]]
    assert client.get("/v1/studies", params={"state": "sleeping"}).status_code == 422


def test_trials_page_with_cursor(trained, client):
    first = client.get(f"/v1/studies/{SPEC['name']}/trials", params={"limit": 3}).json()
    assert [t["number"] for t in first["items"]] == [0, 1, 2] and first["next_after"] == 2
    rest = client.get(f"/v1/studies/{SPEC['name']}/trials", params={"limit": 3, "after": 2}).json()
    assert [t["number"] for t in rest["items"]] == [3] and rest["next_after"] is None
    trial = first["items"][0]
    assert trial["state"] in ("COMPLETE", "PRUNED") and trial["epochs"] >= 1 and trial["duration_s"] > 0
    assert set(trial["params"]) >= {"hidden_size", "lr", "optimizer"}
    assert trial["params"] == SPEC["initial_trials"][0]  # the initial trial runs first, as given


def test_dashboard_reads_the_same_storage_and_is_read_only(trained, client):
    assert client.get("/dashboard").status_code == 200
    names = [s["study_name"] for s in client.get("/api/studies").json()["study_summaries"]]
    assert SPEC["name"] in names
    assert client.post("/api/studies", json={"study_name": "x", "directions": ["minimize"]}).status_code == 403


def test_openapi_documents_the_spec(client):
    schema = client.get("/openapi.json").json()
    assert "StudySpec" in schema["components"]["schemas"]
    body = schema["paths"]["/v1/studies"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"] == "#/components/schemas/StudySpec"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_a_study_whose_trials_are_spent_shows_finalizing_until_its_model_is_stored(client, settings):
    """Between its last trial and its stored model a study is ``finalizing``, not ``running``."""
    spec = {**copy.deepcopy(SPEC), "name": "api-finalizing", "priority": 20}
    spec["budget"] = {"n_trials": 2, "max_epochs": 2}
    assert client.post("/v1/studies", json=spec).status_code == 201
    Worker(settings, threads=1, device="cpu", max_trials=2).run()  # the two trials, not the finalize ticket
    assert client.get("/v1/studies/api-finalizing").json()["state"] == "finalizing"
    listed = [s["name"] for s in client.get("/v1/studies", params={"state": "finalizing"}).json()["items"]]
    assert listed == ["api-finalizing"]
    running = [s["name"] for s in client.get("/v1/studies", params={"state": "running"}).json()["items"]]
    assert "api-finalizing" not in running
    Worker(settings, threads=1, device="cpu", exit_when_idle=True).run()  # the finalize ticket
    assert client.get("/v1/studies/api-finalizing").json()["state"] == "done"


def test_times_are_published_as_rfc3339_with_their_offset(trained, client):
    """Stored times are naive UTC; the API publishes them with the offset its schema's date-time promises."""
    from datetime import datetime

    body = client.get(f"/v1/studies/{SPEC['name']}").json()
    for key in ("created_at", "started_at", "finished_at"):
        assert datetime.fromisoformat(body[key]).utcoffset() is not None, (key, body[key])


def test_gets_parse_a_stored_spec_once_not_per_request(trained, client, monkeypatch):
    """A study's stored spec is parsed once per process (validation builds a sampler): reads
    through the API use the typed spec, never re-validate the dict per request."""
    from rnntune.service import samplers

    built = []
    real = samplers.make_sampler
    monkeypatch.setattr(samplers, "make_sampler", lambda *a, **k: built.append(1) or real(*a, **k))
    for _ in range(5):
        for path in ("", "/best", "/trials.csv"):
            assert client.get(f"/v1/studies/{SPEC['name']}{path}").status_code == 200
        assert client.get("/v1/studies").status_code == 200
    assert len(built) <= 1, f"the spec was validated {len(built)} times for 20 GETs"
