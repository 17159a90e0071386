"""Engines and sessions for our tables, and the Optuna storage on the same database.

One engine per process (``make_engine``), small pools with pre-ping so a restarted Postgres costs
one failed checkout instead of a crash. SQLite gets WAL and a busy timeout so the API, the
dashboard and a local worker can share one file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from rnntune.service.config import Settings

T = TypeVar("T")
SQLITE_TIMEOUT_S = 60
# Errors worth retrying: the database went away (restart, killed connection, network). Optuna
# wraps a failed commit in StorageInternalError.
TRANSIENT_ERRORS = (OperationalError, DBAPIError, optuna.exceptions.StorageInternalError)
# How many times ``retry_db`` calls: a storage call rides out ~35 s (waits of 0.5, 1, 2, 4, 8, 10,
# 10 s); a write that must not be dropped (a settle, failing a worker's own trial) ~4 min, or,
# while its worker shuts down, ~3.5 s (the lease and the trial's link on the ticket recover the rest).
RETRY_ATTEMPTS = 8
PATIENT_ATTEMPTS = 30
STOPPING_ATTEMPTS = 4
# Per process: ours and Optuna's engine, each ``db_pool_size`` + ``db_max_overflow`` (2 + 2 by
# default) -> at most 8 connections, usually 2-3. Beyond a few dozen workers put PgBouncer in
# transaction mode in front (deploy/kubernetes): nothing here keeps session state on a server
# connection (no SET, no server-side prepared statements with psycopg2, advisory locks only per
# transaction), so hundreds of client connections share a few dozen server ones.
# No pool_pre_ping: a worker checks a connection out ~10 times per trial, and a ping each time
# was a tenth of the per-trial cost. ``_ping_idle_connections`` pings only a connection that sat
# idle long enough for the server to have gone away meanwhile.
PG_POOL: dict[str, Any] = {"pool_pre_ping": False, "pool_recycle": 1800}
IDLE_PING_S = 1.0


def _engine_kwargs(settings: Settings) -> dict[str, Any]:
    if settings.is_sqlite:
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S, "check_same_thread": False}}
    return {**PG_POOL, "pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow}


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _ping_idle_connections(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections idle over ``IDLE_PING_S``: a ping at
    checkout, and a fresh connection if it fails (after a Postgres restart, say). A connection
    in steady use is not pinged; if the server dies under it, the error is a disconnect,
    SQLAlchemy drops the whole pool, and the caller's retry gets a new connection."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"connection idle {time.monotonic() - since:.0f}s failed its ping") from exc


def _setup_engine(engine: Engine, url: str) -> Engine:
    if not url.startswith("sqlite"):
        _ping_idle_connections(engine)
    return engine


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    _ensure_sqlite_dir(url)
    engine = _setup_engine(create_engine(url, **_engine_kwargs(settings)), url)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def init_db(engine: Engine) -> None:
    """Create or upgrade our tables (Alembic, our own version table; never Optuna's tables)."""
    from rnntune.service.store.migrate import upgrade

    upgrade(engine)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def retry_db(
    fn: Callable[..., T], *args: Any, attempts: int = RETRY_ATTEMPTS, log: logging.Logger | None = None, who: str = ""
) -> T:
    """``fn(*args)``, riding out a dropped connection or a database restart: the transient errors
    are retried ``attempts`` times in all, waiting twice as long each time (0.5 s, at most 10 s);
    the last one is raised. ``log`` warns of each retry, as ``who``."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args)
        except TRANSIENT_ERRORS as exc:
            if attempt == attempts:
                raise
            if log is not None:
                log.warning("%s: database error (%s), retry %d in %.1fs", who, type(exc).__name__, attempt, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


def patient_attempts(stopping: bool) -> int:
    """``retry_db``'s attempts for a write that must not be dropped, by whether its worker is stopping."""
    return STOPPING_ATTEMPTS if stopping else PATIENT_ATTEMPTS


def in_session(sessions: Callable[[], Session], fn: Callable[[Session], T]) -> T:
    """``fn`` on a session of its own, closed after."""
    with sessions() as session:
        return fn(session)


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's storage, whose engine pings a connection that sat idle (as ours does).

    No Optuna heartbeat: the ticket's lease is the one judge of a lost worker
    (``queue.requeue_expired``), so no stale-trial check runs inside ``optimize``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _setup_engine(self.engine, str(self.engine.url))


def make_storage(settings: Settings) -> optuna.storages.RDBStorage:
    """Optuna's storage on the same database."""
    url = settings.database_url
    _ensure_sqlite_dir(url)
    # Optuna creates its tables on first use; processes starting together on a fresh database
    # race on that (PostgreSQL: "relation ... already exists"). The loser finds them next time.
    for attempt in range(5):
        try:
            return ResilientRDBStorage(url, engine_kwargs=_engine_kwargs(settings))
        except (ProgrammingError, IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")
