"""Create and upgrade rnntune's tables with Alembic (``rnntune migrate``; run by serve/api/worker
on start). Optuna creates and upgrades its own tables itself."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


FIRST = "0001"
LOCK_KEY = 0x726E6E74  # "rnnt": the advisory lock that serialises migrating processes


def lock(connection) -> None:
    """On PostgreSQL, wait for any other process migrating this database (API and workers start
    together). A transaction-level lock: released by the migration's own commit or rollback, so
    it holds through PgBouncer in transaction pooling mode, where a session-level lock could be
    left on a server connection that another client then gets."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring our tables to ``revision``. A database whose tables predate migrations (made by
    ``create_all`` in rnntune 0.1 development builds) is adopted at the first revision.

    The lock comes first, in the same transaction as the inspection, the stamp and the
    upgrade: two processes adopting a legacy database one after the other, never both."""
    with engine.begin() as connection:
        lock(connection)
        cfg = _config(connection)
        if current_on(connection) is None and inspect(connection).has_table("rnntune_studies"):
            command.stamp(cfg, FIRST)
        command.upgrade(cfg, revision)


def head() -> str:
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None  # the package ships its migrations
    return revision


VERSION_TABLE = "rnntune_alembic_version"


def current_on(connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_on(connection)


def is_current(engine: Engine) -> bool:
    return current(engine) == head()
