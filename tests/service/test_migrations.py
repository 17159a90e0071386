"""Our Alembic migrations, on fresh PostgreSQL and SQLite databases: a database made by an older
release upgrades in place without losing rows, the migrated schema is exactly what
service/store/tables.py declares, and every step downgrades."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rnntune.service.store import migrate
from rnntune.service.store.tables import Base
from tests.conftest import create_pg_database, drop_pg_database


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request, tmp_path):
    if request.param == "postgres":
        url = create_pg_database()
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()
        drop_pg_database(url)
    else:
        eng = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
        yield eng
        eng.dispose()


def _schema_diff(engine) -> list:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # the version table is Alembic's own
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name == migrate.VERSION_TABLE)]


def test_upgrade_keeps_rows_and_matches_the_models(engine):
    migrate.upgrade(engine, "0001")
    assert migrate.current(engine) == "0001"
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO rnntune_workers (id, host, pid, device, labels, state, ticket_id, started_at, last_heartbeat) "
                "VALUES ('w-1', 'h', 1, 'cpu', '[]', 'idle', NULL, '2026-11-01 00:00:00', '2026-11-01 00:00:00')"
            )
        )
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head() and migrate.is_current(engine)
    with engine.connect() as c:
        row = c.execute(sa.text("SELECT id, pid, trial_number FROM rnntune_workers")).one()
    assert tuple(row) == ("w-1", 1, None)
    assert _schema_diff(engine) == []


def test_every_step_downgrades_and_upgrades_again(engine):
    migrate.upgrade(engine)
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), "base")
    assert migrate.current(engine) is None
    assert not sa.inspect(engine).has_table("rnntune_studies")
    migrate.upgrade(engine)
    assert migrate.is_current(engine) and _schema_diff(engine) == []
