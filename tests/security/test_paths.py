"""Attack 1: a spec that names a server file (``data.path``, embeddings) must not read it.

Paths must lie under ``RNNTUNE_DATA_ROOTS`` (empty by default), checked at submit (422 naming
the field) and again by the worker before it opens anything; data errors never quote a file's
contents beyond the column names of a file its user was allowed to name.
"""

from __future__ import annotations

import pytest

from rnntune.service.config import Settings
from rnntune.service.data.data_cache import DataCache, StudyDataError
from rnntune.service.spec import parse_spec
from tests.conftest import make_settings

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
SECRET = "sekrit-value-4242"


def study(name: str, data: dict, **extra) -> dict:
    return {"name": name, "data": data, "search_space": SPACE, "budget": {"n_trials": 2, "max_epochs": 1}, **extra}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("root")
    (path / "series.csv").write_text("value\n" + "\n".join(str(i % 7) for i in range(80)) + "\n")
    (path / "secret-cell.csv").write_text(f"value\n1\n2\n{SECRET}\n3\n")
    (path / "escape.csv").symlink_to("/etc/passwd")
    return path


@pytest.fixture(scope="module")
def settings(pg_url, root, tmp_path_factory):
    return make_settings(pg_url, tmp_path_factory.mktemp("data"), data_roots=str(root))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "csv", "path": "/etc/passwd", "target": "zzz", "params": {"delimiter": ":"}}, "data.path"),
        ({"name": "text", "path": "/proc/self/environ", "params": {"delimiter": "\u0000"}}, "data.path"),
        ({"name": "csv", "params": {"path": "/etc/passwd", "target": "root"}}, "data.params.path"),
        ({"name": "csv", "path": "series.csv", "target": "value"}, "data.path"),  # relative: the worker's cwd
        (
            {"name": "text", "dataset": "x", "params": {"embeddings": "/etc/passwd", "embeddings_vocab": "v"}},
            "data.params.embeddings",
        ),
        (
            {"name": "text", "dataset": "x", "params": {"embeddings": "m", "embeddings_vocab": "/etc/hostname"}},
            "data.params.embeddings_vocab",
        ),
    ],
)
def test_a_spec_cannot_name_a_file_outside_the_data_roots(client, data, field):
    r = client.post("/v1/studies", json=study("paths", data))
    assert r.status_code == 422, r.text
    errors = {".".join(e["loc"][1:]): e["msg"] for e in r.json()["detail"]}
    assert field in errors, errors
    assert "root:" not in r.text and "PATH=" not in r.text  # nothing of the file comes back
    assert client.get("/v1/studies/paths").status_code == 404


def test_a_symlink_under_a_root_is_judged_by_its_target(client, root):
    r = client.post(
        "/v1/studies", json=study("escape", {"name": "csv", "path": str(root / "escape.csv"), "target": "x"})
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "data", "path"]
    assert "RNNTUNE_DATA_ROOTS" in r.json()["detail"][0]["msg"]


def test_a_file_under_a_root_is_accepted(client, root):
    r = client.post(
        "/v1/studies", json=study("rooted", {"name": "csv", "path": str(root / "series.csv"), "target": "value"})
    )
    assert r.status_code == 201, r.text


def test_the_worker_checks_again_before_opening(root):
    """A stored spec (submitted under other settings, or written into the table) is checked by
    the worker's own roots: nothing outside them is opened."""
    spec = parse_spec(study("w", {"name": "csv", "path": "/etc/passwd", "target": "zzz", "params": {"delimiter": ":"}}))
    with pytest.raises(StudyDataError) as caught:
        DataCache(data_roots=[root]).get(spec, None)
    assert str(caught.value).startswith("data.path:") and "RNNTUNE_DATA_ROOTS" in str(caught.value)
    assert "root" not in str(caught.value).replace("RNNTUNE_DATA_ROOTS", "")
    escape = parse_spec(study("w", {"name": "csv", "path": str(root / "escape.csv"), "target": "x"}))
    with pytest.raises(StudyDataError, match="data.path"):
        DataCache(data_roots=[root]).get(escape, None)
    with pytest.raises(StudyDataError, match="allows no file paths"):
        DataCache().get(
            parse_spec(study("w", {"name": "csv", "path": str(root / "series.csv"), "target": "value"})), None
        )


def test_data_errors_never_quote_a_cell(root):
    spec = parse_spec(study("w", {"name": "csv", "path": str(root / "secret-cell.csv"), "target": "value"}))
    with pytest.raises(StudyDataError) as caught:
        DataCache(data_roots=[root]).get(spec, 4)
    message = str(caught.value)
    assert "'value' is not numeric: row 4" in message, message
    assert SECRET not in message


def test_embeddings_are_uploads_named_in_the_spec(client, pg_url, tmp_path):
    """Embeddings need no path: a matrix (.npy) and its vocabulary (.txt) are uploaded like data."""
    import io

    import numpy as np

    matrix = io.BytesIO()
    np.save(matrix, np.ones((3, 4), dtype=np.float32))
    for name, filename, content in (
        ("vec", "vec.npy", matrix.getvalue()),
        ("vec-vocab", "vec.txt", b"good\nbad\nfine\n"),
        ("reviews", "reviews.csv", b"text,label\n" + b"good film,pos\nbad film,neg\n" * 10),
    ):
        fields = {"name": name} | ({"format": "text"} if name == "reviews" else {})
        r = client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)
        assert r.status_code == 201, r.text
    assert client.get("/v1/datasets/vec").json()["info"] == {"shape": [3, 4], "dtype": "float32"}
    data = {"name": "text", "dataset": "reviews", "params": {"embeddings": "vec", "embeddings_vocab": "vec-vocab"}}
    r = client.post("/v1/studies", json=study("embedded", data, metric="val_accuracy"))
    assert r.status_code == 201, r.text
    swapped = {**data, "params": {"embeddings": "vec-vocab", "embeddings_vocab": "vec"}}
    r = client.post("/v1/studies", json=study("swapped", swapped, metric="val_accuracy"))
    assert r.status_code == 422 and "needs a npy file" in r.text, r.text
    alone = {**data, "params": {"embeddings": "vec"}}
    r = client.post("/v1/studies", json=study("alone", alone, metric="val_accuracy"))
    assert r.status_code == 422 and "go together" in r.text, r.text
    assert client.delete("/v1/datasets/vec").status_code == 409  # the study holds its matrix too

    # A worker fetches both uploads and builds the embedding layer's matrix from them.
    from rnntune.service.store.db import make_engine, session_factory

    spec = parse_spec(client.get("/v1/studies/embedded").json()["spec"])
    cache = DataCache(sessions=session_factory(make_engine(Settings(database_url=pg_url))), cache_dir=tmp_path)
    loaded = cache.get(spec, None)
    assert loaded.embeddings is not None and loaded.embeddings.shape[1] == 4
    assert loaded.meta["embeddings_coverage"] > 0  # "good" and "bad" are in the matrix's vocabulary


def test_roots_must_be_absolute():
    with pytest.raises(ValueError, match="absolute"):
        Settings(data_roots="/srv/data:relative/dir")
