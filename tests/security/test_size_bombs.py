"""Attacks 3-5 of the second pass: small files that imply huge derived sizes.

- a class-count bomb: an 879-byte .npz whose ``y`` holds the label 99999 (100,000 classes: an
  80 GB allocation per trial), and evaluation's n_classes**2 confusion matrix;
- text bombs: a few very long rows padded into every row, and a vocabulary x ``embed_dim`` the
  model-size limit did not count;
- a CSV header of 40,000 unique columns, checked in quadratic time.

Each derived size is a setting with a 422 (or a data error) naming it; memory is measured on the
process that does the work (a subprocess's peak RSS, or tracemalloc for numpy's allocations).
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnntune.models.data import DataError, load_dataset
from rnntune.models.files import FileCheckError, FileLimits, check_csv, check_npz
from rnntune.service.api.app import create_app
from rnntune.service.config import Settings

MB = 2**20
MARGIN = 32 * MB  # fixed allowance on top of 2x the file: the split index arrays, the vocabulary


@pytest.fixture(scope="module")
def client(pg_url):
    with TestClient(create_app(Settings(database_url=pg_url), dashboard=False)) as c:
        yield c


def class_bomb() -> bytes:
    buffer = io.BytesIO()
    y = np.zeros(16, dtype=np.int64)
    y[0] = 99999
    np.savez_compressed(buffer, X=np.zeros((16, 2, 1), dtype=np.float32), y=y)
    return buffer.getvalue()


def test_a_class_count_bomb_is_refused_naming_the_limit(client):
    bomb = class_bomb()
    assert len(bomb) < 1200
    r = client.post("/v1/datasets", files={"file": ("classes.npz", bomb)})
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_CLASSES" in r.json()["detail"] and "100000 classes" in r.json()["detail"]
    with pytest.raises(FileCheckError, match="RNNTUNE_MAX_CLASSES"):  # the workers' loader checks the same
        check_npz(bomb)
    assert check_npz(bomb, FileLimits(max_classes=100_000))["n_classes"] == 100_000


def test_the_model_limit_counts_the_head_the_classes_imply(client):
    buffer = io.BytesIO()
    y = np.arange(40) % 20
    y[0] = 999  # 1000 classes: within RNNTUNE_MAX_CLASSES
    np.savez(buffer, X=np.zeros((40, 3, 2), dtype=np.float32), y=y)
    r = client.post("/v1/datasets", files={"file": ("wide-head.npz", buffer.getvalue())})
    assert r.status_code == 201, r.text
    spec = {
        "name": "wide-head",
        "metric": "val_accuracy",
        "data": {"name": "npz", "dataset": "wide-head"},
        "model": {"hidden_size": 4096, "num_layers": 1, "cell": "rnn", "bidirectional": True},
        "budget": {"n_trials": 1, "max_epochs": 1},
    }
    # rnn 4096 x 2 directions: 33.6 M recurrent parameters, + 8192 x 1000 in the head = 41.8 M
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 201, r.text
    with TestClient(create_app(Settings(database_url=client.app.state.settings.database_url,
                                        max_model_params=40_000_000), dashboard=False)) as tight:  # fmt: skip
        r = tight.post("/v1/studies", json={**spec, "name": "wide-head-2"})
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_MODEL_PARAMS" in r.text


EVALUATE = textwrap.dedent(
    """
    import resource, torch
    from rnntune.models.train import evaluate
    torch.set_num_threads(1)
    n = 12000
    model = torch.nn.Linear(1, n)
    x, y = torch.zeros(64, 1), torch.arange(64) * 150
    evaluate(torch.nn.Linear(1, 3), x[:2], y[:2] % 3, "classification")  # warm-up: first-use allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = evaluate(model, x, y, "classification")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024, result["f1"] >= 0)
    """
)


def test_evaluation_never_allocates_classes_squared():
    """12,000 classes: the confusion matrix alone was 12000**2 int64 = 1.1 GB."""
    out = subprocess.run([sys.executable, "-c", EVALUATE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grown_mb, ok = out.stdout.split()
    assert ok == "True"
    assert int(grown_mb) < 50, f"evaluate grew the process by {grown_mb} MB"


def long_rows_csv(tmp_path, n_short: int = 3000, n_long: int = 5, long_tokens: int = 40_000):
    lines = ["text,label"]
    lines += [f"a short text {i % 7},{'pos' if i % 2 else 'neg'}" for i in range(n_short)]
    lines += [" ".join(["ab"] * long_tokens) + ",pos" for _ in range(n_long)]
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_padded_text_length_is_bounded_by_default(tmp_path):
    path = long_rows_csv(tmp_path)  # 0.7 MB; padded to its longest row: 3005 x 40000 int64 = 0.96 GB
    size = path.stat().st_size
    (tmp_path / "warm").mkdir()
    load_dataset("text", {"path": str(long_rows_csv(tmp_path / "warm", 10, 1, 10))})  # first-use imports (torch)
    tracemalloc.start()
    try:
        data = load_dataset("text", {"path": str(path)}, file_limits=FileLimits(max_text_length=256))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.x_train.shape[1] <= 256 and data.text["max_length"] == 256
    assert peak < 2 * size + MARGIN, f"peak {peak / MB:.0f} MB for a {size / MB:.1f} MB file"
    assert data.meta["tokens_per_example"]["max"] == 40_000 and data.meta["truncated"] > 0


def test_text_length_and_vocabulary_over_the_limits_are_422(client):
    content = b"text,label\n" + b"good film,pos\nbad film,neg\n" * 20
    r = client.post("/v1/datasets", files={"file": ("reviews.csv", content)}, data={"format": "text"})
    assert r.status_code == 201, r.text
    base = {"name": "t1", "data": {"name": "text", "dataset": "reviews"}, "budget": {"n_trials": 1, "max_epochs": 1}}
    # 200,000 distinct words with embed_dim 4096: an 819 M-parameter embedding
    r = client.post("/v1/studies", json={**base, "model": {"embed_dim": 4096}})
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_MODEL_PARAMS" in r.text
    r = client.post("/v1/studies", json={**base, "model": {"embed_dim": 4096}, "training": {"batch_size": 8},
                    "data": {**base["data"], "params": {"max_size": 5000, "max_length": 64}}})  # fmt: skip
    assert r.status_code == 201, r.text  # a vocabulary the spec bounds is counted as bounded
    r = client.post("/v1/studies", json={**base, "name": "t2", "data": {**base["data"],
                    "params": {"max_length": 100_000}}})  # fmt: skip
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_TEXT_LENGTH" in r.text
    r = client.post("/v1/studies", json={**base, "name": "t3", "data": {**base["data"],
                    "params": {"max_size": 10**7}}})  # fmt: skip
    assert r.status_code == 422 and "RNNTUNE_MAX_VOCAB" in r.text, r.text


def test_a_wide_csv_header_is_checked_in_linear_time_and_bounded(client):
    header = ",".join(f"c{i}" for i in range(40_000))
    content = (header + "\n" + ",".join("1" for _ in range(40_000)) + "\n").encode()
    assert len(content) < 400_000
    r = client.post("/v1/datasets", files={"file": ("wide.csv", content)})
    assert r.status_code == 422, r.text
    assert "RNNTUNE_MAX_COLUMNS" in r.json()["detail"]
    started = time.perf_counter()
    info = check_csv(content, ",", FileLimits(max_columns=50_000))  # allowed: the check is linear
    assert len(info["numeric_columns"]) == 40_000
    assert time.perf_counter() - started < 2.0
    with pytest.raises(FileCheckError, match=r"repeats columns \['c1'\]"):
        check_csv(b"c0,c1,c1\n1,2,3\n", ",")


def test_padded_text_cells_are_bounded_beyond_the_default_length(client, tmp_path):
    """An operator who raises RNNTUNE_MAX_TEXT_LENGTH still bounds rows x padded length: at submit
    for an uploaded file (its rows are known), in the loader for any file (the exact figure)."""
    roomy = Settings(database_url=client.app.state.settings.database_url, max_text_length=100_000,
                     max_text_cells=1_000_000)  # fmt: skip
    content = b"text,label\n" + b"good film,pos\nbad film,neg\n" * 1000  # 2000 rows
    r = client.post("/v1/datasets", files={"file": ("cells.csv", content)}, data={"format": "text"})
    assert r.status_code == 201, r.text
    base = {"data": {"name": "text", "dataset": "cells"}, "budget": {"n_trials": 1, "max_epochs": 1}}
    with TestClient(create_app(roomy, dashboard=False)) as c:
        r = c.post("/v1/studies", json={**base, "name": "cells-1", "data": {**base["data"],
                   "params": {"max_length": 1000}}})  # fmt: skip
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"][-2:] == ["params", "max_length"] and "RNNTUNE_MAX_TEXT_CELLS=1000000" in error["msg"]
        assert "2000 rows x 1000 tokens" in error["msg"]
        r = c.post("/v1/studies", json={**base, "name": "cells-2", "search_space": {
                   "max_length": {"type": "int", "low": 16, "high": 5000}}})  # fmt: skip
        assert r.status_code == 422 and "RNNTUNE_MAX_TEXT_CELLS" in r.text, r.text
        r = c.post("/v1/studies", json={**base, "name": "cells-3", "data": {**base["data"],
                   "params": {"max_length": 400}}})  # fmt: skip
        assert r.status_code == 201, r.text
    # a file the API cannot count (under a data root): the loader refuses the padded array
    path = long_rows_csv(tmp_path, n_short=300, n_long=2, long_tokens=5000)  # 302 rows x 5000 tokens
    limits = FileLimits(max_text_length=100_000, max_text_cells=1_000_000)
    with pytest.raises(DataError, match=r"RNNTUNE_MAX_TEXT_CELLS=1000000"):
        load_dataset("text", {"path": str(path), "max_length": 10_000}, file_limits=limits)
    data = load_dataset("text", {"path": str(path), "max_length": 1000}, file_limits=limits)
    assert data.x_train.shape[1] == 1000
