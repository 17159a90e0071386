"""Engines and sessions for our tables, and the Optuna storage on the same database.

One engine per process (``make_engine``), small pools with pre-ping so a restarted Postgres costs
one failed checkout instead of a crash. SQLite gets WAL and a busy timeout so the API, the
dashboard and a local worker can share one file.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from rnntune.service.config import Settings
from rnntune.service.optuna_compat import StaleCheckStorage

SQLITE_TIMEOUT_S = 60
# Errors worth retrying: the database went away (restart, killed connection, network). Optuna
# wraps a failed commit in StorageInternalError.
TRANSIENT_ERRORS = (OperationalError, DBAPIError, optuna.exceptions.StorageInternalError)
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
STALE_CHECK_S = 2.0  # how often one process looks for a study's stale trials (Optuna: every trial)


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
    from rnntune.service.migrate import upgrade

    upgrade(engine)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class ResilientRDBStorage(StaleCheckStorage):
    """Optuna's heartbeat thread dies on the first database error, after which a live trial
    goes stale and is failed under a busy worker. Here a missed beat is logged and the next
    one tried again; only a worker that is really gone stops beating."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _setup_engine(self.engine, str(self.engine.url))
        self._stale_checked: dict[int, float] = {}

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna looks for stale trials before every trial (a query and a commit); once per
        ``STALE_CHECK_S`` per study and process is enough when the grace period is many seconds
        long. A dead worker's trial is failed at most that much later."""
        now = time.monotonic()
        if now - self._stale_checked.get(study_id, -STALE_CHECK_S) < STALE_CHECK_S:
            return []
        self._stale_checked[study_id] = now
        return super().stale_trial_ids(study_id)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except TRANSIENT_ERRORS as exc:
            logging.getLogger("rnntune.worker").warning(
                "heartbeat of trial %d missed: %s", trial_id, type(exc).__name__
            )


# What a retry copy keeps of its original's user attributes: how it entered the queue. The
# rest is the dead run's (its epochs, its outcome), and an inherited ``fail_reason`` would make
# the copy's own death look like a counted failure.
CARRIED_USER_ATTRS = ("initial", "retry_of")


class RetryLostTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker died (its heartbeat went stale, or the ticket's
    next holder found it RUNNING), with rnntune's two rules:

    - a trial carrying ``fail_reason`` had already failed: its worker recorded why, then died
      before Optuna's ``tell``. That is a counted failure, which the ticket's next holder
      settles, not a death: it is not retried, whoever marks it failed first (another worker's
      stale-trial check or that holder), so the trial is counted once and runs once;
    - the copy carries only :data:`CARRIED_USER_ATTRS` of its original."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if "fail_reason" in trial.user_attrs:
            return
        carried = copy.copy(trial)  # the setter below replaces the copy's dict, not the original's
        carried.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in CARRIED_USER_ATTRS}
        super().__call__(study, carried)


def make_storage(settings: Settings, *, heartbeat: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage on the same database. Workers pass ``heartbeat=True``: a trial whose worker
    stops beating for ``grace_period_s`` is failed and retried with the same parameters."""
    url = settings.database_url
    _ensure_sqlite_dir(url)
    kwargs: dict[str, Any] = {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if heartbeat:
        kwargs = {
            "heartbeat_interval": settings.heartbeat_interval_s,
            "grace_period": settings.grace_period_s,
            "heartbeat_stale_trial_callback": RetryLostTrial(max_retry=settings.max_retries),
        }
    # Optuna creates its tables on first use; processes starting together on a fresh database
    # race on that (PostgreSQL: "relation ... already exists"). The loser finds them next time.
    for attempt in range(5):
        try:
            return ResilientRDBStorage(url, engine_kwargs=_engine_kwargs(settings), **kwargs)
        except (ProgrammingError, IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")
