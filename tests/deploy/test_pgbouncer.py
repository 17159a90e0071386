"""The queue's fault tests through a real PgBouncer in transaction pooling mode.

Every connection of the test, its migrations and its worker subprocesses goes through PgBouncer
with a server pool smaller than the number of client connections, so a server connection serves
many clients one transaction at a time: session state (SET, server-side prepared statements,
session advisory locks) would leak between them or break. The tests are tests/test_queue.py's,
run on a database reached through PgBouncer.
"""

from __future__ import annotations

import pytest

from rnntune.service.config import Settings
from rnntune.service.store.db import make_engine, make_storage
from tests import test_queue as q
from tests.conftest import create_pg_database, drop_pg_database
from tests.pgbouncer import PgBouncer
from tests.queue_helpers import Env

POOL = 6  # server connections per database: fewer than the clients (workers x 2 engines + the test)


@pytest.fixture(scope="module")
def bouncer():
    with PgBouncer(pool_size=POOL) as b:
        yield b


@pytest.fixture
def env(bouncer):
    direct = create_pg_database()
    e = Env(bouncer.url_for(direct))
    yield e
    database = direct.rsplit("/", 1)[1]
    # It really went through PgBouncer, within the server pool.
    assert bouncer.n_transactions(database) > 0
    pools = [p for p in bouncer.show("POOLS") if p["database"] == database]
    assert pools and all(p["sv_active"] + p["sv_idle"] + p["sv_used"] <= POOL for p in pools)
    e.close()
    drop_pg_database(direct)


@pytest.mark.slow
def test_kill9_through_pgbouncer(env):
    q.test_kill9_mid_epoch_retries_same_params_on_another_worker(env)


@pytest.mark.slow
def test_sigterm_through_pgbouncer(env):
    q.test_sigterm_mid_trial_exits_0_fast_and_trial_is_retried(env)


@pytest.mark.slow
def test_kill9_every_worker_through_pgbouncer(env):
    q.test_kill9_every_worker_then_new_ones_finish_the_study(env)


def test_pool_sizes_are_settings(pg_url):
    settings = Settings(database_url=pg_url, db_pool_size=3, db_max_overflow=1)
    engine = make_engine(settings)
    storage = make_storage(settings)
    try:
        for pool in (engine.pool, storage.engine.pool):
            assert (pool.size(), pool._max_overflow) == (3, 1)
    finally:
        engine.dispose()
        storage.engine.dispose()
    with pytest.raises(ValueError, match="db_pool_size"):
        Settings(database_url=pg_url, db_pool_size=0)
