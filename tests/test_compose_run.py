"""The compose deployment, run as written, without a container engine.

`docker-compose config` renders docker-compose.yml with .env.example (its secrets filled in); this test starts exactly
the `command`s of its `api`, `dashboard` and (three) `worker` services with their rendered
environment. Only two things change: the database URL points at a fresh database on the local
PostgreSQL (compose's `postgres` service), and the published ports are free local ones. It then
submits a study over HTTP with a token, watches it finish, and reads it back through the
dashboard's API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import httpx2
import pytest
import yaml

from tests.conftest import REPO, wait_for
from tests.test_e2e import free_port, stop, study_spec

pytestmark = pytest.mark.slow


def rendered_services(tmp_path) -> dict:
    """The services as compose renders them from .env.example with its two secrets filled in
    (compose refuses the file as shipped)."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (v1) renders the compose file: scripts/test.sh installs it"
    env = (REPO / ".env.example").read_text()
    env = env.replace("POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=compose-run-password\n")
    env = env.replace("RNNTUNE_API_TOKENS=\n", "RNNTUNE_API_TOKENS=compose-run-token-0123456789\n")
    (tmp_path / "compose.env").write_text(env)
    out = subprocess.run(
        [exe, "--env-file", str(tmp_path / "compose.env"), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return yaml.safe_load(out)["services"]


def start(service: dict, db_url: str, port: int | None = None, internal_port: int | None = None) -> subprocess.Popen:
    command = list(service["command"])
    assert command[0] == "rnntune"
    if port is not None:
        command[command.index("--port") + 1] = str(port)
    env = {**os.environ, **{k: str(v) for k, v in service["environment"].items() if v is not None}}  # null: unset
    env.update(RNNTUNE_DATABASE_URL=db_url, PYTHONPATH=str(REPO), RNNTUNE_POLL_INTERVAL_S="0.5")
    return subprocess.Popen([sys.executable, "-m", "rnntune.service.cli", *command[1:]], env=env, cwd=REPO)


def test_compose_processes_serve_a_study(pg_url, tmp_path):
    services = rendered_services(tmp_path)
    token = services["api"]["environment"]["RNNTUNE_API_TOKENS"].split(",")[0]
    api_port, dash_port = free_port(), free_port()
    api = start(services["api"], pg_url, api_port)
    headers = {"Authorization": f"Bearer {token}"}
    client = httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=10)

    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx2.HTTPError:
            return False

    procs = [api]
    try:
        wait_for(ready, 60, what="the api service's /readyz")
        dashboard = start(services["dashboard"], pg_url, dash_port)
        workers = [start(services["worker"], pg_url) for _ in range(3)]
        procs += [dashboard, *workers]
        assert httpx2.get(f"http://127.0.0.1:{api_port}/v1/studies").status_code == 401  # the token is required

        spec = study_spec("compose-study")
        r = client.post("/v1/studies", json=spec)
        assert r.status_code == 201, r.text
        wait_for(
            lambda: client.get("/v1/studies/compose-study").json()["state"] == "done", 240, 1, "the study to finish"
        )
        study = client.get("/v1/studies/compose-study").json()
        assert study["finished"] == spec["budget"]["n_trials"]

        tickets = client.get("/v1/studies/compose-study/trials", params={"limit": 100}).json()["items"]
        assert len({t["number"] for t in tickets}) == len(tickets)

        # The standalone dashboard service (token required) and the API's own mount agree.
        dash = httpx2.Client(base_url=f"http://127.0.0.1:{dash_port}", headers=headers, timeout=10)
        wait_for(lambda: _answers(dash, "/api/studies"), 60, what="the dashboard service")
        assert httpx2.get(f"http://127.0.0.1:{dash_port}/api/studies").status_code == 401
        for c in (dash, client):
            names = [s["study_name"] for s in c.get("/api/studies").json()["study_summaries"]]
            assert "compose-study" in names
    finally:
        codes = stop(*procs)
    assert codes[2:] == [0, 0, 0], f"workers exited with {codes[2:]}"


def _answers(client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx2.HTTPError:
        return False
