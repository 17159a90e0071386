"""Attack 6 (and the compose half of attack 1): secrets, the dataset guard, stale copies, websockets.

- workers get the database URL and no token; ``.env.example`` holds no secret compose accepts;
- ``serve`` never prints the database password;
- a study naming a data set by id in any spelling ("002") holds it against deletion;
- deleting a data set removes workers' local copies;
- a websocket without a token is refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url
from starlette.websockets import WebSocketDisconnect

from rnntune.service.data.data_cache import DataCache
from rnntune.service.store.db import make_engine, session_factory
from tests.api_server import free_port
from tests.conftest import make_settings, rnntune

REPO = Path(__file__).resolve().parents[2]
TOKEN = "leftover-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def compose(*args: str, env_file: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (v1) validates the compose file offline: scripts/test.sh installs it"
    return subprocess.run([exe, "--env-file", str(env_file), *args], cwd=REPO, capture_output=True, text=True)


def test_env_example_holds_no_usable_secret():
    r = compose("config", "-q", env_file=REPO / ".env.example")
    assert r.returncode != 0
    assert "POSTGRES_PASSWORD" in r.stderr or "RNNTUNE_API_TOKENS" in r.stderr


def test_workers_get_the_database_url_and_no_token(tmp_path):
    env = (REPO / ".env.example").read_text()
    env = env.replace("POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=pg-secret-for-tests\n")
    env = env.replace("RNNTUNE_API_TOKENS=\n", f"RNNTUNE_API_TOKENS={TOKEN}\n")
    (tmp_path / ".env").write_text(env)
    r = compose("--profile", "gpu", "config", env_file=tmp_path / ".env")
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    for name in ("worker", "worker-gpu"):
        environment = services[name]["environment"]
        assert not [k for k in environment if "TOKEN" in k], (name, sorted(environment))
        assert "RNNTUNE_DATABASE_URL" in environment, name
    for name in ("api", "dashboard"):
        assert services[name]["environment"]["RNNTUNE_API_TOKENS"] == TOKEN


def test_serve_never_prints_the_database_password(pg_url):
    url = make_url(pg_url).set(password="pw-must-not-show").render_as_string(hide_password=False)
    proc = rnntune(
        "serve", "--workers", "0", "--port", str(free_port()), "--database-url", url,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Application startup complete" in line or not line:
                break
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    text = "".join(lines) + out
    assert "rnntune is up on postgresql+psycopg2://" in text, text
    assert "pw-must-not-show" not in text and "***" in text


@pytest.fixture(scope="module")
def settings(pg_url, tmp_path_factory):
    return make_settings(pg_url, tmp_path_factory.mktemp("data"), api_tokens=TOKEN)


def upload(client, name: str, content: bytes = b"value\n1\n2\n3\n4\n5\n6\n7\n8\n"):
    r = client.post("/v1/datasets", files={"file": (f"{name}.csv", content)}, headers=BEARER)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_study_naming_a_dataset_by_a_padded_id_holds_it(client):
    row = upload(client, "held")
    spec = {
        "name": "padded-id",
        "data": {"name": "csv", "dataset": f"00{row['id']}", "target": "value"},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2}},
        "budget": {"n_trials": 2, "max_epochs": 1},
    }
    assert client.post("/v1/studies", json=spec, headers=BEARER).status_code == 201
    r = client.delete(f"/v1/datasets/{row['id']}", headers=BEARER)
    assert r.status_code == 409, r.text
    assert "padded-id" in r.json()["detail"]


def test_deleting_a_dataset_removes_workers_copies(client, settings):
    row = upload(client, "copied", b"value\n" + b"\n".join(b"%d" % i for i in range(9)) + b"\n")
    cache = DataCache(sessions=session_factory(make_engine(settings)), cache_dir=settings.data_dir / "datasets")
    local = Path(cache.dataset_file("copied"))
    assert local.is_file() and local.name.startswith(row["sha256"])
    assert client.delete("/v1/datasets/copied", headers=BEARER).status_code == 204
    old = time.time() - 60
    os.utime(local, (old, old))  # written before the listing, as on a real worker
    assert cache.prune() == 1
    assert not local.exists()


def test_a_websocket_without_a_token_is_refused(client):
    with pytest.raises(WebSocketDisconnect) as caught, client.websocket_connect("/v1/studies"):
        pass
    assert caught.value.code == 1008
