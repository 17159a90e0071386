"""Authentication, body limits, per-study limits and idempotent creation, on both databases."""

from __future__ import annotations

import base64
import copy
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings, load_tokens

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests-0123456789"
SPEC = yaml.safe_load((REPO / "studies" / "sine-lstm.yaml").read_text()) | {"name": "sec-study"}
SPEC["budget"] = {"n_trials": 4, "max_epochs": 3}


@pytest.fixture(scope="module")
def client(db_url):
    settings = Settings(
        database_url=db_url, api_tokens=f"{TOKEN},another-token-0123456789", max_body_kb=64, max_trials_per_study=50
    )
    with TestClient(create_app(settings)) as c:
        yield c


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "path", ["/v1/studies", "/v1/studies/x", "/dashboard", "/api/studies", "/docs", "/openapi.json"]
)
def test_every_route_wants_a_token(client, path):
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get(path, headers=bearer("wrong-token-0123456789")).status_code == 401
    assert client.get(path, headers=bearer()).status_code in (200, 404)
    assert client.get(path, headers=bearer("another-token-0123456789")).status_code in (200, 404)


def test_probes_are_open(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_browser_basic_auth_reaches_a_read_only_dashboard(client):
    basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()}
    assert client.get("/dashboard", headers=basic).status_code == 200
    r = client.post("/api/studies", headers=basic, json={"study_name": "x", "directions": ["minimize"]})
    assert r.status_code == 403 and "read-only" in r.json()["detail"]


def test_writable_dashboard_when_asked(db_url):
    with TestClient(create_app(Settings(database_url=db_url, dashboard_writable=True))) as c:
        r = c.post("/api/studies", json={"study_name": "from-dashboard", "directions": ["minimize"]})
        assert r.status_code != 403


def test_body_over_limit_is_413_and_nothing_is_created(client):
    big = copy.deepcopy(SPEC) | {"name": "too-big", "description": "x" * 70_000}
    r = client.post("/v1/studies", json=big, headers=bearer())
    assert r.status_code == 413 and "RNNTUNE_MAX_BODY_KB" in r.json()["detail"]

    def chunks():  # no Content-Length: streamed, chunked
        payload = yaml.safe_dump(big).encode()
        for i in range(0, len(payload), 4096):
            yield payload[i : i + 4096]

    r = client.post("/v1/studies", content=chunks(), headers=bearer() | {"Content-Type": "application/yaml"})
    assert r.status_code == 413
    assert client.get("/v1/studies/too-big", headers=bearer()).status_code == 404


def test_chunked_body_under_limit_passes(client):
    payload = yaml.safe_dump(copy.deepcopy(SPEC) | {"name": "chunked-ok"}).encode()
    r = client.post(
        "/v1/studies",
        content=iter([payload[:100], payload[100:]]),
        headers=bearer() | {"Content-Type": "application/yaml"},
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("change", "limit"),
    [
        ({"budget": {"n_trials": 51}}, "RNNTUNE_MAX_TRIALS_PER_STUDY=50"),
        ({"budget": {"n_trials": 5, "max_epochs": 5000}}, "RNNTUNE_MAX_EPOCHS_PER_TRIAL=1000"),
    ],
)
def test_per_study_limits_are_422_naming_the_limit(client, change, limit):
    r = client.post("/v1/studies", json=copy.deepcopy(SPEC) | {"name": "over"} | change, headers=bearer())
    assert r.status_code == 422 and limit in str(r.json()["detail"])


def test_grid_limit(db_url):
    spec = copy.deepcopy(SPEC) | {"name": "big-grid", "sampler": {"name": "grid"}, "budget": {}, "initial_trials": []}
    spec["search_space"] = {
        "hidden_size": {"type": "int", "low": 1, "high": 100},
        "batch_size": {"type": "int", "low": 1, "high": 100},
    }
    with TestClient(create_app(Settings(database_url=db_url, max_grid_size=1000, max_trials_per_study=100000))) as c:
        r = c.post("/v1/studies", json=spec)
    assert r.status_code == 422 and "RNNTUNE_MAX_GRID_SIZE=1000" in str(r.json()["detail"])


def test_ten_concurrent_creates_make_one_study(client):
    spec = copy.deepcopy(SPEC) | {"name": "racy"}
    codes: list[int] = []

    def create():
        codes.append(client.post("/v1/studies", json=spec, headers=bearer()).status_code)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 9 + [201], codes
    names = [s["name"] for s in client.get("/v1/studies", headers=bearer()).json()["items"]]
    assert names.count("racy") == 1


def test_tokens_from_file_and_short_tokens_refused(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# one per line\nfirst-token-0123456789\n\nsecond-token-0123456789\n")
    assert load_tokens(str(f)) == ["first-token-0123456789", "second-token-0123456789"]
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(api_tokens="short")


def test_non_loopback_bind_without_tokens_is_refused():
    r = subprocess.run(
        [sys.executable, "-m", "rnntune.service.cli", "api", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 2 and "RNNTUNE_API_TOKENS" in r.stderr and "--insecure" in r.stderr
