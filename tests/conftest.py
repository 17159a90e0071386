"""Shared fixtures: a fresh real database per test module, on PostgreSQL or SQLite.

PostgreSQL is the server on 127.0.0.1:5432 (``RNNTUNE_TEST_PG``), shared by the whole suite and
CI, so each module gets its own database, dropped afterwards. Never a mock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("RNNTUNE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _admin_engine():
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def create_pg_database() -> str:
    name = f"rnntune_test_{uuid.uuid4().hex[:10]}"
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="module")
def pg_url():
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'rnntune.db'}"


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def db_url(request):
    """Each test that takes this runs on both databases."""
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")


def make_settings(database_url: str, data_dir: Path, **overrides):
    """Settings for a test: its database, a data folder of its own and a fast poll; ``overrides``
    as ``Settings`` takes them."""
    from rnntune.service.config import Settings

    return Settings(**{"database_url": database_url, "poll_interval_s": 0.2, "data_dir": data_dir, **overrides})


@pytest.fixture(scope="module")
def settings(db_url, tmp_path_factory):
    """A module's settings on ``db_url``: both databases, unless the module's own ``db_url``
    picks one (``return pg_url``); a module that needs more overrides ``settings``."""
    return make_settings(db_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def client(settings):
    """The API of ``settings``, in process, without the dashboard."""
    from fastapi.testclient import TestClient

    from rnntune.service.api.app import create_app

    with TestClient(create_app(settings, dashboard=False)) as c:
        yield c


@pytest.fixture(scope="module")
def module_env(pg_url):
    """A PostgreSQL database shared by a module's tests, as ``tests.queue_helpers.Env`` (a module
    that runs on both databases overrides it on ``db_url``)."""
    from tests.queue_helpers import Env

    e = Env(pg_url)
    yield e
    e.close()


@pytest.fixture
def env(request):
    """A database for a test's workers, as ``tests.queue_helpers.Env``: a PostgreSQL database of
    the test's own, for worker processes that claim any study they find; in a module marked
    ``shared_database``, the module's ``module_env`` with every study earlier tests left active
    ended (a claim takes any study)."""
    from tests.queue_helpers import Env, end_active_studies

    if request.node.get_closest_marker("shared_database"):
        yield end_active_studies(request.getfixturevalue("module_env"))
        return
    url = create_pg_database()
    e = Env(url)
    yield e
    e.close()
    drop_pg_database(url)


def rnntune(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start ``rnntune ARGS`` as a real subprocess (same interpreter, this checkout)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "rnntune.service.cli", *args], env=full_env, cwd=kwargs.pop("cwd", REPO), **kwargs
    )


def wait_for(predicate, timeout_s: float, interval_s: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
