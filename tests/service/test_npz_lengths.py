"""Variable-length sequences through the service: an uploaded .npz with ``lengths`` trains a study
(packed) whose exported model predicts ragged input; bad ``lengths`` are a 422 naming the field."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnntune.models.checkpoint import load_model
from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from rnntune.service.worker import Worker
from tests.models.test_lengths import BAD_LENGTHS, N, ragged_arrays


@pytest.fixture(scope="module")
def settings(pg_url, tmp_path_factory):
    return Settings(database_url=pg_url, poll_interval_s=0.2, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings, dashboard=False)) as c:
        yield c


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(client, content: bytes, name: str):
    return client.post("/v1/datasets", files={"file": (f"{name}.npz", content)}, data={"name": name})


@pytest.mark.parametrize(("lengths", "reason"), BAD_LENGTHS)
def test_bad_lengths_are_a_422_naming_the_field(client, lengths, reason):
    r = upload(client, npz_bytes(**{**ragged_arrays(), "lengths": lengths}), "bad-lengths")
    assert r.status_code == 422, r.text
    assert "lengths" in r.json()["detail"] and reason in r.json()["detail"], r.json()


def test_object_lengths_are_a_422_before_loading(client):
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=True, **{**ragged_arrays(), "lengths": np.array([3] * N, dtype=object)})
    r = upload(client, buffer.getvalue(), "pickled-lengths")
    assert r.status_code == 422 and "array 'lengths': object arrays" in r.json()["detail"], r.text


def test_a_study_on_ragged_sequences_trains_packed_and_its_model_predicts_ragged_input(client, settings):
    raw = ragged_arrays(pad=5.0)
    r = upload(client, npz_bytes(**raw), "ragged")
    assert r.status_code == 201, r.text
    assert r.json()["info"]["lengths"] == [int(raw["lengths"].min()), int(raw["lengths"].max())]
    spec = {
        "name": "ragged-gru",
        "data": {"name": "npz", "dataset": "ragged", "params": {"scale": True}},
        "model": {"cell": "gru", "hidden_size": 16},
        "training": {"lr": 1e-2},
        "search_space": {"batch_size": {"type": "categorical", "choices": [16, 32]}},
        "metric": "val_accuracy",
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2, "max_epochs": 12},
    }
    assert client.post("/v1/studies", json=spec).status_code == 201
    Worker(settings, exit_when_idle=True, threads=1, device="cpu").run()
    assert client.get("/v1/studies/ragged-gru").json()["state"] == "done"
    best = client.get("/v1/studies/ragged-gru/best").json()
    assert best["test_metrics"]["accuracy"] > 0.8, best
    assert "logistic" in best["baselines"], best["baselines"]
    model = load_model(io.BytesIO(client.get("/v1/studies/ragged-gru/best/model").content), device="cpu")
    sequences = [raw["X"][i, : raw["lengths"][i]] for i in range(N)]
    predicted = model.predict(sequences)
    assert predicted.shape == (N,) and np.mean(predicted == raw["y"]) > 0.8
    other_padding = model.predict(
        np.where(np.arange(12)[None, :, None] < raw["lengths"][:, None, None], raw["X"], -9.0)
    )
    assert not np.array_equal(other_padding, predicted), "an (N, T, F) array is N full-length sequences"
