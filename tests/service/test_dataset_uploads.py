"""Uploaded data sets, on PostgreSQL and SQLite: upload (size-limited, checksummed, checked),
list, read, delete; a study naming one trains on it; broken data fails a study at once."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys

import numpy as np
import pytest

from rnntune.service.api.app import create_app
from rnntune.service.worker import Worker
from tests.api_server import serving
from tests.conftest import REPO, make_settings

ENERGY = REPO / "studies" / "data" / "energy-load.csv"
LIMIT_MB = 0.1  # 100 KiB: the example CSV (28 KB) fits, a 200 KB file does not


@pytest.fixture(scope="module")
def settings(db_url, tmp_path_factory):
    return make_settings(db_url, tmp_path_factory.mktemp("data"), max_upload_mb=LIMIT_MB)


def upload(client, content: bytes, filename: str, **fields):
    return client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)


def series_csv(n: int, *, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = np.sin(2 * np.pi * t / 12) + 0.1 * rng.standard_normal(n)
    lines = ["day,temp,value"] + [f"d{i},{np.cos(i / 5):.3f},{v:.4f}" for i, v in enumerate(x)]
    return ("\n".join(lines) + "\n").encode()


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def csv_spec(name: str, dataset: str, **data) -> dict:
    return {
        "name": name,
        "data": {"name": "csv", "dataset": dataset, "target": "value", "window": 8, **data},
        "model": {"cell": "gru", "hidden_size": 8},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2, "max_epochs": 2},
    }


def test_upload_list_get_delete(client):
    content = ENERGY.read_bytes()
    r = upload(client, content, "energy-load.csv")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "energy-load" and body["format"] == "csv" and body["size"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["info"]["rows"] == 1095
    assert body["info"]["numeric_columns"] == ["temperature_c", "is_weekend", "load_mwh"]
    assert "not numeric" in body["info"]["other_columns"]["date"]
    assert [d["name"] for d in client.get("/v1/datasets").json()["items"]] == ["energy-load"]
    assert client.get("/v1/datasets/energy-load").json()["sha256"] == body["sha256"]
    assert client.get(f"/v1/datasets/{body['id']}").json()["name"] == "energy-load"  # by id too
    again = upload(client, content, "energy-load.csv")
    assert again.status_code == 409 and "exists" in again.json()["detail"]
    assert client.delete("/v1/datasets/energy-load").status_code == 204
    assert client.get("/v1/datasets/energy-load").status_code == 404
    assert client.delete("/v1/datasets/energy-load").status_code == 404


def test_npz_upload_records_shapes_and_task(client):
    rng = np.random.default_rng(0)
    content = npz_bytes(X=rng.normal(size=(30, 5, 2)), y=rng.integers(0, 3, size=30))
    r = upload(client, content, "Gestures 2024.npz", name="gestures")
    assert r.status_code == 201, r.text
    assert r.json()["info"] == {"X": [30, 5, 2], "y": [30], "task": "classification", "n_classes": 3}
    r = upload(client, npz_bytes(X=np.zeros((4, 3, 1)), y=np.zeros(4)), "My Regression.NPZ")
    assert r.status_code == 201 and r.json()["name"] == "my-regression" and r.json()["info"]["task"] == "regression"


def test_upload_over_the_limit_is_413(client):
    too_big = series_csv(6000)  # ~200 KB
    assert len(too_big) > LIMIT_MB * 2**20
    r = upload(client, too_big, "big.csv")
    assert r.status_code == 413 and "upload limit" in r.json()["detail"]
    assert client.get("/v1/datasets/big").status_code == 404


NAN_X = np.zeros((4, 3, 1))
NAN_X[1, 1, 0] = np.nan


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("a.csv", b"when,what\nmonday,rain\ntuesday,sun\n", "no numeric column"),
        ("b.csv", b"value\n", "header but no data rows"),
        ("c.csv", b"", "the file is empty"),
        ("d.csv", b"value\n\xff\xfe1\n", "not UTF-8"),
        ("e.csv", b"v,v\n1,2\n", "repeats columns"),
        ("f.csv", b"x,y\n1,\nnan,2\n", "no numeric column without missing values"),
        ("g.npz", b"PK\x03\x04 not really a zip", "not a readable .npz"),
        ("h.npz", npz_bytes(X=np.zeros((4, 3, 1))), "must hold arrays 'X' and 'y'"),
        ("i.npz", npz_bytes(X=np.zeros((4, 3)), y=np.zeros(4)), "X must be a non-empty (N, T, F) array"),
        ("j.npz", npz_bytes(X=np.zeros((4, 3, 1)), y=np.zeros(5)), "X has 4 samples but y has 5"),
        ("k.npz", npz_bytes(X=NAN_X, y=np.zeros(4)), "X has 1 NaN/inf values"),
        ("l.npz", npz_bytes(X=np.zeros((4, 3, 1)), y=np.zeros(4, dtype=int)), "at least 2 classes"),
        ("m.dat", b"value\n1\n", "format must be one of csv, npz, text, npy, vocab"),
    ],
)
def test_broken_upload_is_422_with_the_reason(client, filename, content, reason):
    r = upload(client, content, filename)
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"], r.json()
    assert r.json()["detail"].startswith(f"{filename}: ")


def test_bad_names_and_missing_file_are_422(client):
    assert "name must match" in upload(client, b"v\n1\n2\n", "x.csv", name="Bad Name").json()["detail"]
    assert "all digits" in upload(client, b"v\n1\n2\n", "x.csv", name="123").json()["detail"]
    r = client.post("/v1/datasets", data={"name": "x"}, files={"other": ("x.csv", b"v\n1\n")})
    assert r.status_code == 422 and "field named 'file'" in r.json()["detail"]


def test_spec_naming_a_missing_or_unfit_dataset_is_422(client):
    assert upload(client, series_csv(60), "fit-check.csv").status_code == 201
    cases = [
        (csv_spec("ds-missing", "no-such-data"), "data.dataset", "no dataset named 'no-such-data'"),
        (
            csv_spec("ds-format", "fit-check") | {"data": {"name": "npz", "dataset": "fit-check"}},
            "data.name",
            "is a csv file",
        ),
        (
            csv_spec("ds-target", "fit-check", target="day"),
            "data.target",
            "column 'day' of dataset 'fit-check' is not numeric",
        ),
        (
            csv_spec("ds-inputs", "fit-check", inputs=["wind"]),
            "data.inputs",
            "'wind' of dataset 'fit-check' is not a column",
        ),
    ]
    for spec, field, reason in cases:
        r = client.post("/v1/studies", json=spec)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert any(".".join(d["loc"][1:]) == field and reason in d["msg"] for d in detail), detail
    assert client.get("/v1/studies/ds-missing").status_code == 404


def test_study_on_an_uploaded_dataset_trains_and_holds_it(client, settings):
    assert upload(client, series_csv(120), "wave.csv").status_code == 201
    spec = csv_spec("ds-wave", "wave", inputs=["temp"])
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 201, r.text
    r = client.delete("/v1/datasets/wave")  # a queued study needs it
    assert r.status_code == 409 and "ds-wave" in r.json()["detail"]
    Worker(settings, exit_when_idle=True, threads=1, device="cpu").run()
    study = client.get("/v1/studies/ds-wave").json()
    assert study["state"] == "done", study
    assert study["counts"]["complete"] == 2 and study["counts"]["failed"] == 0
    best = client.get("/v1/studies/ds-wave/best").json()
    assert best["model"] is not None and best["test_metrics"]["loss"] > 0
    assert (settings.data_dir / "datasets").is_dir()  # the worker's local copy, named by sha256
    assert client.delete("/v1/datasets/wave").status_code == 204  # the study is done


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"name": "sine", "params": {"n_series": 20, "length": 20}, "window": 40}, "window"),
        ({"name": "csv", "dataset": "short", "target": "value", "window": 45}, "window"),
    ],
)
def test_broken_data_fails_the_study_at_once(client, settings, data, reason):
    if data.get("dataset") and client.get("/v1/datasets/short").status_code == 404:
        assert upload(client, series_csv(60), "short.csv").status_code == 201  # 42 train steps < 45 + 1
    name = f"ds-broken-{abs(hash(reason + str(data))) % 10000}"
    spec = {
        "name": name,
        "data": data,
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "budget": {"n_trials": 4, "max_epochs": 2},
    }
    assert client.post("/v1/studies", json=spec).status_code == 201
    Worker(settings, exit_when_idle=True, threads=1, device="cpu").run()
    study = client.get(f"/v1/studies/{name}").json()
    assert study["state"] == "failed", study
    assert study["reason"].startswith("data: ") and reason in study["reason"], study["reason"]
    assert study["counts"]["failed"] <= 1 and study["counts"]["complete"] == 0


def test_cli_uploads_and_lists(settings, tmp_path):
    path = tmp_path / "Tide Gauge.csv"
    path.write_bytes(series_csv(50))
    cli = [sys.executable, "-m", "rnntune.service.cli", "datasets"]
    with serving(create_app(settings, dashboard=False)) as url:
        r = subprocess.run(
            [*cli, "upload", str(path), "--api-url", url], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("uploaded tide-gauge (id ") and "numeric columns ['temp', 'value']" in r.stdout
        r = subprocess.run([*cli, "list", "--api-url", url], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert r.returncode == 0 and "tide-gauge" in r.stdout
        broken = tmp_path / "broken.csv"
        broken.write_bytes(b"a,b\nx,y\n")
        r = subprocess.run(
            [*cli, "upload", str(broken), "--api-url", url], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert r.returncode == 2 and "422" in r.stderr and "no numeric column" in r.stderr


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"name": "sine", "dataset": "x"}, "data.dataset", "read by name 'csv', 'npz' or 'text'"),
        ({"name": "csv", "dataset": "x", "path": "/a.csv", "target": "v"}, "data.dataset", "not both"),
        ({"name": "npz"}, "data", "needs a path or an uploaded dataset"),
    ],
)
def test_spec_checks_dataset_without_a_database(data, field, reason):
    from rnntune.service.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as err:
        parse_spec({"name": "t", "data": data, "budget": {"n_trials": 1}})
    assert any(loc == field and reason in msg for loc, msg in err.value.errors), err.value.errors
