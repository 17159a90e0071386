"""What a finished study hands back, on PostgreSQL and SQLite: the best trial with val and test
metrics, the model file (downloaded, loaded, predicting the stored metrics), `rnntune export`,
parameter importances and the trials as CSV."""

from __future__ import annotations

import copy
import csv
import io
import subprocess
import sys
import typing

import numpy as np
import optuna
import pytest

from rnntune.service.api.app import create_app
from rnntune.service.worker import Worker
from tests.api_server import serving
from tests.conftest import REPO

SPEC = {
    "name": "res-sine",
    "data": {"name": "sine", "params": {"n_series": 40, "length": 30, "seed": 0}, "window": 12},
    "model": {"cell": "gru"},
    "search_space": {
        "hidden_size": {"type": "int", "low": 4, "high": 24, "log": True},
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "momentum": {"type": "float", "low": 0.1, "high": 0.9, "when": {"optimizer": "sgd"}},
    },
    "initial_trials": [
        {"hidden_size": 16, "lr": 1e-2, "optimizer": "adam"},
        {"hidden_size": 8, "lr": 5e-3, "optimizer": "sgd", "momentum": 0.8},
    ],
    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 3},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 5, "max_epochs": 3},
    "priority": 10,
}


def train(client, settings) -> optuna.Study:
    """SPEC submitted and run to its end by one in-process worker (5 trials, then finalize)."""
    assert client.post("/v1/studies", json=SPEC).status_code == 201
    Worker(settings, exit_when_idle=True, threads=1, device="cpu").run()
    return optuna.load_study(study_name=SPEC["name"], storage=settings.database_url)


@pytest.fixture(scope="module")
def trained(client, settings):
    return train(client, settings)


def test_best_has_val_and_test_metrics(trained, client):
    study = client.get(f"/v1/studies/{SPEC['name']}").json()
    assert study["state"] == "done"
    best = client.get(f"/v1/studies/{SPEC['name']}/best").json()
    assert best["trial_number"] == trained.best_trial.number
    assert best["params"] == trained.best_trial.params
    assert best["value"] == pytest.approx(trained.best_value)
    assert best["hyperparameters"]["cell"] == "gru" and best["hyperparameters"]["window"] == 12
    # the stored model is the best trial re-created: its val loss is the trial's value
    assert best["val_metrics"]["loss"] == pytest.approx(trained.best_value, rel=1e-5)
    assert set(best["test_metrics"]) >= {"loss", "mae", "mse_original", "rmse_original", "mae_original", "naive_loss"}
    model = best["model"]
    assert model["download"] == f"/v1/studies/{SPEC['name']}/best/model" and model["size"] > 1000
    assert model["config"]["model"]["hidden_size"] == trained.best_trial.params["hidden_size"]
    attrs = trained.user_attrs
    assert attrs["rnntune_test_metrics"]["loss"] == pytest.approx(best["test_metrics"]["loss"])
    assert attrs["rnntune_best_model"]["sha256"] == model["sha256"]


def test_model_file_round_trip_predicts_the_stored_metrics(trained, client):
    import hashlib

    from rnntune.models import load_dataset, load_model

    r = client.get(f"/v1/studies/{SPEC['name']}/best/model")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(r.content).hexdigest() == r.headers["x-checksum-sha256"]
    model = load_model(io.BytesIO(r.content), device="cpu")
    assert model.meta["study"] == SPEC["name"] and model.meta["data_meta"]["window"] == 12
    assert model.train_config.seed == 0 and model.config.cell == "gru"

    # the user's view: windows of the series in its own units -> predictions in its own units
    data = load_dataset("sine", SPEC["data"]["params"], window=12)
    s = data.scaler
    x_test = data.x_test * np.asarray(s["x_std"]) + np.asarray(s["x_mean"])
    y_test = data.y_test * np.asarray(s["y_std"]) + np.asarray(s["y_mean"])
    predictions = model.predict(x_test)
    assert predictions.shape == y_test.shape
    test = client.get(f"/v1/studies/{SPEC['name']}/best").json()["test_metrics"]
    mse = float(np.mean((predictions.astype(np.float64) - y_test) ** 2))
    assert mse == pytest.approx(test["mse_original"], rel=1e-4)
    scaled = (predictions - np.asarray(s["y_mean"])) / np.asarray(s["y_std"])
    assert float(np.mean((scaled - data.y_test) ** 2)) == pytest.approx(test["loss"], rel=1e-4)


def test_importances_cover_the_searched_params(trained, client):
    r = client.get(f"/v1/studies/{SPEC['name']}/importances")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_trials"] == 5 and body["reason"] is None
    assert set(body["importances"]) <= set(SPEC["search_space"]) and {"hidden_size", "lr"} <= set(body["importances"])
    assert sum(body["importances"].values()) == pytest.approx(1.0)
    momentum = [p for p in body["params"] if p["name"] == "momentum"]
    if momentum:  # a conditional parameter is scored over the trials that had it
        assert momentum[0]["when"] == {"optimizer": ["sgd"]} and momentum[0]["n_trials"] < 5


def test_importances_with_too_few_trials_are_empty_with_a_reason(client, trained):
    spec = copy.deepcopy(SPEC) | {"name": "res-few", "priority": 0}
    assert client.post("/v1/studies", json=spec).status_code == 201  # queued: no trial yet
    body = client.get("/v1/studies/res-few/importances").json()
    assert body["importances"] == {} and body["n_trials"] == 0 and "too few trials" in body["reason"]
    r = client.get("/v1/studies/res-few/best")
    assert r.status_code == 404 and "no completed trial" in r.json()["detail"]
    r = client.get("/v1/studies/res-few/best/model")
    assert r.status_code == 404 and "no model yet" in r.json()["detail"]
    assert client.get("/v1/studies/nope/best").status_code == 404


def test_trials_csv_has_params_and_one_row_per_trial(trained, client):
    r = client.get(f"/v1/studies/{SPEC['name']}/trials.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(trained.trials) == 5
    header = r.text.splitlines()[0].split(",")
    assert header[:3] == ["number", "state", "value"]
    assert [h for h in header if h.startswith("params_")] == [f"params_{p}" for p in SPEC["search_space"]]
    first = rows[0]
    assert first["number"] == "0" and first["state"] == "COMPLETE" and first["params_optimizer"] == "adam"
    assert first["params_momentum"] == ""  # not suggested: adam has no momentum
    assert float(first["value"]) == pytest.approx(trained.trials[0].value)
    assert client.get("/v1/studies/nope/trials.csv").status_code == 404


def test_handlers_return_their_response_models(trained, client, settings):
    """FastAPI would validate a dict a handler returns into its response model without a word:
    call the handlers themselves, on a finished study with its model stored, and look."""
    from rnntune.service.api.routes import datasets, health, plugins, results, studies, workers

    name, storage = SPEC["name"], client.app.state.storage
    with client.app.state.sessions() as s:
        returned = {
            health.healthz: health.healthz(),
            health.readyz: health.readyz(s),
            studies.list_studies: studies.list_studies(s, settings),
            studies.get_study: studies.get_study(name, s, settings),
            studies.list_trials: studies.list_trials(name, s, limit=2),
            results.get_best: results.get_best(name, s),
            results.get_pareto: results.get_pareto(name, s),
            results.get_importances: results.get_importances(name, s, storage),
            datasets.list_datasets: datasets.list_datasets(s),
            workers.list_workers: workers.list_workers(s, settings, include_stopped=True),
            plugins.list_plugins: plugins.list_plugins(s, settings),
        }
    for handler, value in returned.items():
        assert type(value) is typing.get_type_hints(handler)["return"], handler.__name__
    assert returned[results.get_best].model is not None and returned[workers.list_workers].items


@pytest.fixture
def api_url(settings):
    """The API over real HTTP, for the CLI subprocess."""
    with serving(create_app(settings, dashboard=False)) as url:
        yield url


def test_rnntune_export_writes_the_model_file(trained, api_url, tmp_path):
    from rnntune.models import load_model

    out = tmp_path / "best.pt"
    cli = [sys.executable, "-m", "rnntune.service.cli", "export"]
    r = subprocess.run(
        [*cli, SPEC["name"], "-o", str(out), "--api-url", api_url], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "test:" in r.stdout
    assert load_model(out).meta["trial_number"] == trained.best_trial.number
    r = subprocess.run([*cli, "res-few", "--api-url", api_url], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1 and "no model yet" in r.stderr
