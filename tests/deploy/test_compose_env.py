"""What docker-compose.yml hands each container, as `docker-compose config` renders it, and what
stays out of git and out of the image's build context.

- The dashboard service's own healthcheck command passes against a running `rnntune dashboard`
  with tokens set (its pages answer 401 without one).
- Every RNNTUNE_* name of .env.example reaches the services that read it; the API tokens reach
  only the API and the dashboard, never a worker.
- `.env` is ignored by git and kept out of the build context, parsed by docker-compose's own
  context builder (docker-py's ``exclude_paths``, Docker's .dockerignore rules).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import httpx2
import pytest
import yaml

from rnntune.service.config import Settings
from tests.conftest import REPO, wait_for
from tests.test_e2e import free_port, stop

TOKEN = "compose-env-token-0123456789"
WORKERS = ("worker", "worker-gpu")
RNNTUNE_SERVICES = ("api", "dashboard", *WORKERS)
# .env.example names that are not passed through to every rnntune container, and why.
CLIENT_ONLY = {"RNNTUNE_API_URL", "RNNTUNE_API_TOKEN"}  # rnntune submit / status on the host
COMPOSE_SET = {"RNNTUNE_DATABASE_URL", "RNNTUNE_DATA_DIR"}  # compose's postgres URL, the image's /data
PORTS = {"RNNTUNE_API_PORT", "RNNTUNE_DASHBOARD_PORT"}  # published ports, read by compose itself
SECRET = "RNNTUNE_API_TOKENS"  # api + dashboard only
API_ONLY = {"RNNTUNE_ALLOWED_HOSTS"}  # the dashboard answers loopback names only


def example_names() -> list[str]:
    """Every RNNTUNE_* name .env.example sets or shows commented out."""
    text = (REPO / ".env.example").read_text()
    return sorted(set(re.findall(r"^#?\s*(RNNTUNE_[A-Z0-9_]+)=", text, flags=re.M)))


def render(tmp_path, values: dict[str, str], *args: str) -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (v1) renders the compose file: scripts/test.sh installs it"
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RNNTUNE_", "POSTGRES_"))}
    out = subprocess.run(
        [exe, "--env-file", str(env_file), *args, "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=clean,
    ).stdout
    return yaml.safe_load(out)["services"]


def distinct_values() -> dict[str, str]:
    """Each .env.example name set to a value of its own, so a rendered value shows where it came from."""
    values = {"POSTGRES_PASSWORD": "compose-env-password", SECRET: TOKEN}
    for name in example_names():
        values.setdefault(name, f"from-env-{name.lower()}")
    values["RNNTUNE_API_PORT"], values["RNNTUNE_DASHBOARD_PORT"] = "18123", "18124"
    return values


def test_every_env_setting_reaches_the_services_that_read_it(tmp_path):
    values = distinct_values()
    services = render(tmp_path, values, "--profile", "gpu")
    envs = {name: services[name]["environment"] for name in RNNTUNE_SERVICES}
    for name in example_names():
        if name in CLIENT_ONLY | PORTS:
            readers: tuple[str, ...] = ()
        elif name == SECRET:
            readers = ("api", "dashboard")
        elif name in API_ONLY:
            readers = ("api",)
        elif name in COMPOSE_SET:
            continue
        else:
            readers = RNNTUNE_SERVICES
        for service in readers:
            assert envs[service].get(name) == values[name], f"{name} from .env does not reach {service}"
        for service in set(RNNTUNE_SERVICES) - set(readers) - ({"dashboard"} if name in API_ONLY else set()):
            assert envs[service].get(name) is None, f"{name} reaches {service}, which does not read it"
    assert envs["dashboard"]["RNNTUNE_ALLOWED_HOSTS"] == "localhost,127.0.0.1"
    assert {p["published"] for p in services["api"]["ports"]} == {18123}
    assert services["dashboard"]["ports"] == ["127.0.0.1:18124:8080/tcp"]
    for service in RNNTUNE_SERVICES:  # compose's own database URL, never .env's
        assert envs[service]["RNNTUNE_DATABASE_URL"].startswith(
            "postgresql+psycopg2://rnntune:compose-env-password@postgres:"
        )
        assert "RNNTUNE_DATA_DIR" not in envs[service]  # the image's /data


def test_workers_never_get_the_api_token(tmp_path):
    values = distinct_values() | {"RNNTUNE_API_TOKEN": TOKEN}
    services = render(tmp_path, values, "--profile", "gpu")
    for worker in WORKERS:
        assert TOKEN not in json.dumps(services[worker]), f"the API token reaches {worker}"
    for service in ("api", "dashboard"):
        assert services[service]["environment"][SECRET] == TOKEN


def test_every_setting_a_container_reads_is_passed(tmp_path):
    """A new setting in service/config.py reaches the containers too (or is named here as not)."""
    services = render(tmp_path, {"POSTGRES_PASSWORD": "pw", SECRET: TOKEN})
    not_passed = {"api_tokens", "allowed_hosts", "database_url", "data_dir", "api_url"}
    expected = {f"RNNTUNE_{f.upper()}" for f in Settings.model_fields} - {f"RNNTUNE_{f.upper()}" for f in not_passed}
    for service in ("api", "dashboard", "worker"):
        missing = expected - set(services[service]["environment"])
        assert not missing, f"{service} never gets {sorted(missing)} from .env"


def healthcheck_argv(service: dict, port: int) -> list[str]:
    """The service's healthcheck command as the container runs it, on a free local port."""
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", test
    argv = list(test[1:])
    assert not [a for a in argv if " " in a], f"podman's Docker API would split {argv} on spaces"
    assert sum(a.count("127.0.0.1:8080/") for a in argv) == 1, argv
    argv = [a.replace("127.0.0.1:8080/", f"127.0.0.1:{port}/") for a in argv]
    if argv[0] == "python":  # the image's python: the same interpreter the test runs on
        argv[0] = sys.executable
    return argv


@pytest.mark.slow
def test_dashboard_healthcheck_passes_with_tokens_set(pg_url, tmp_path):
    services = render(tmp_path, {"POSTGRES_PASSWORD": "pw", SECRET: TOKEN})
    dashboard = services["dashboard"]
    command = list(dashboard["command"])
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNTUNE_")}
    env.update({k: str(v) for k, v in dashboard["environment"].items() if v is not None})
    env.update(RNNTUNE_DATABASE_URL=pg_url, PYTHONPATH=str(REPO))
    assert env[SECRET] == TOKEN
    proc = subprocess.Popen([sys.executable, "-m", "rnntune.service.cli", *command[1:]], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def serving() -> bool:
        try:
            return httpx2.get(f"{base}/dashboard", headers=auth, timeout=5).status_code == 200
        except httpx2.HTTPError:
            return False

    try:
        wait_for(serving, 60, what="the dashboard to serve with the token")
        assert httpx2.get(f"{base}/dashboard", timeout=5).status_code == 401  # its pages still need the token
        check = subprocess.run(healthcheck_argv(dashboard, port), capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"the dashboard's healthcheck fails: {check.stderr[-500:]}"
    finally:
        stop(proc)


def test_env_is_ignored_by_git():
    for path in (".env", ".env.local"):
        r = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert r.returncode == 0, f"git would commit {path}"
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO).returncode == 1


def build_context(root) -> set[str]:
    """The files docker-compose sends as the build context of ``root`` (its own docker-py code)."""
    # .dockerignore read as docker.api.build.BuildApiMixin.build reads it
    code = "import json, sys\nfrom docker.utils.build import exclude_paths\nroot = sys.argv[1]\n"
    code += "lines = [x.strip() for x in open(root + '/.dockerignore').read().splitlines()]\n"
    code += "print(json.dumps(sorted(exclude_paths(root, [x for x in lines if x and x[0] != '#']))))"
    r = subprocess.run(["/usr/bin/python3", "-c", code, str(root)], capture_output=True, text=True)
    assert r.returncode == 0, f"docker-compose's docker-py is needed to build the context: {r.stderr[-300:]}"
    return set(json.loads(r.stdout))


def test_build_context_leaves_out_secrets_data_and_caches(tmp_path):
    assert (REPO / ".dockerignore").is_file(), "no .dockerignore: .env and .git go into every build"
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    kept = ["Dockerfile", "pyproject.toml", "README.md", "rnntune/__init__.py", "service/cli.py", "models/x.py"]
    kept += ["studies/sine-lstm.yaml"]
    left_out = [".env", ".env.prod", ".git/HEAD", ".venv/bin/python", "rnntune-data/rnntune.db", "rnntune-data/a/b"]
    left_out += ["service/__pycache__/cli.cpython-311.pyc", "__pycache__/x.pyc", "models/m.pyc", "x.db", "a/b/c.db"]
    left_out += ["c.db-wal", ".pytest_cache/v", ".ruff_cache/x", ".mypy_cache/x", "rnntune.egg-info/PKG-INFO"]
    for rel in kept + left_out:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    context = build_context(tmp_path)
    assert set(kept) <= context
    assert not context & set(left_out), sorted(context & set(left_out))


def test_build_context_holds_what_the_dockerfile_copies():
    context = build_context(REPO)
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", (REPO / "Dockerfile").read_text(), flags=re.M)
    for sources in copied:
        for src in sources.split():
            assert src in context or any(p.startswith(src + "/") for p in context), f"{src} is not in the context"
    assert not {p for p in context if p == ".env" or p.startswith((".git/", ".venv/"))}
