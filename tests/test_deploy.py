"""docker-compose.yml is valid, and every rnntune command in it parses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_is_valid(tmp_path):
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (v1) is needed to validate the compose file: scripts/test.sh installs it"
    filled = (REPO / ".env.example").read_text()
    filled = filled.replace("POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=pw-for-tests\n")
    filled = filled.replace("RNNTUNE_API_TOKENS=\n", "RNNTUNE_API_TOKENS=token-for-tests-0123456789\n")
    (tmp_path / "filled.env").write_text(filled)
    for args in ([], ["--profile", "gpu"]):
        r = subprocess.run(
            [exe, "--env-file", str(tmp_path / "filled.env"), *args, "config", "-q"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    # Without a password and tokens it refuses to start, naming what is missing.
    (tmp_path / "empty.env").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "RNNTUNE_API_TOKENS")}
    r = subprocess.run(
        [exe, "--env-file", str(tmp_path / "empty.env"), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode != 0 and ("POSTGRES_PASSWORD" in r.stderr or "RNNTUNE_API_TOKENS" in r.stderr)


@pytest.mark.parametrize("service", ["api", "dashboard", "worker", "worker-gpu"])
def test_service_commands_exist(service):
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "rnntune"
    r = subprocess.run(
        [sys.executable, "-m", "rnntune.service.cli", *command[1:], "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_compose_shape():
    services = COMPOSE["services"]
    assert {"postgres", "api", "dashboard", "worker"} <= set(services)
    assert "pgdata" in COMPOSE["volumes"] and services["postgres"]["healthcheck"]
    assert all(p.startswith("127.0.0.1:") for p in services["dashboard"]["ports"]), "dashboard must not be public"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
