"""Attack 5: a browser that holds the dashboard's Basic credentials, led by another site.

Cross-site writes, form and ``text/plain`` bodies (what a page can send without a CORS
preflight), Basic credentials outside the dashboard, foreign ``Host`` names (DNS rebinding) and
undeclared methods are all refused before any route runs.
"""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings

TOKEN = "browser-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()}
SPEC = {
    "name": "csrf",
    "data": {"name": "sine"},
    "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2}},
    "budget": {"n_trials": 2, "max_epochs": 1},
}


@pytest.fixture(scope="module")
def client(sqlite_url):
    app = create_app(Settings(database_url=sqlite_url, api_tokens=TOKEN), bind_host="127.0.0.1")
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        yield c


def test_a_cross_site_text_plain_body_creates_nothing(client):
    import json

    headers = {**BASIC, "Content-Type": "text/plain", "Origin": "https://evil.example"}
    r = client.post("/v1/studies", content=json.dumps(SPEC), headers=headers)
    assert r.status_code in (401, 403, 415), r.text
    r = client.post("/v1/studies", content=json.dumps(SPEC), headers={**BEARER, "Content-Type": "text/plain"})
    assert r.status_code == 415, r.text
    assert client.get("/v1/studies/csrf", headers=BEARER).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
def test_cross_site_writes_are_403_even_with_a_token(client, headers):
    r = client.post("/v1/studies", json=SPEC, headers={**BEARER, **headers})
    assert r.status_code == 403, r.text
    assert "cross-site" in r.json()["detail"]


def test_a_form_post_cannot_cancel(client):
    assert client.post("/v1/studies", json=SPEC, headers=BEARER).status_code == 201
    r = client.post("/v1/studies/csrf/cancel", data={"x": "1"}, headers=BEARER)
    assert r.status_code == 415, r.text
    assert client.get("/v1/studies/csrf", headers=BEARER).json()["state"] != "cancelled"
    same_origin = {**BEARER, "Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/v1/studies/csrf/cancel", headers=same_origin).status_code == 200


def test_basic_credentials_count_on_the_dashboard_only(client):
    assert client.get("/dashboard", headers=BASIC).status_code == 200
    r = client.get("/v1/studies", headers=BASIC)
    assert r.status_code == 401
    assert "Basic" not in r.headers["www-authenticate"]  # no browser prompt on API paths
    assert client.post("/v1/studies/csrf/pause", headers=BASIC).status_code == 401


def test_a_foreign_host_is_refused_when_bound_to_loopback(client):
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/v1/studies", headers={**BEARER, "Host": "rebound.evil.example:8000"}).status_code == 400
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200


def test_allowed_hosts_are_the_operators(sqlite_url):
    app = create_app(Settings(database_url=sqlite_url, allowed_hosts="rnntune.example.org"), dashboard=False)
    with TestClient(app, base_url="http://rnntune.example.org") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"Host": "127.0.0.1"}).status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [("TRACE", "/healthz"), ("TRACE", "/dashboard"), ("PUT", "/healthz"), ("PROPFIND", "/v1/studies")],
)
def test_undeclared_methods_are_405(client, method, path):
    r = client.request(method, path, headers=BEARER)
    assert r.status_code == 405, r.text
    assert r.headers["allow"]
