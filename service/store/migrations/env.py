"""Alembic environment for rnntune's own tables.

Our history lives in ``rnntune_alembic_version``, and only ``rnntune_*`` tables are compared or
touched, so Optuna's tables and Optuna's own alembic history (``alembic_version``) never are.
On PostgreSQL the caller (``migrate.upgrade``) holds a transaction-level advisory lock that
serialises processes starting together (API + workers); taking it again here is a no-op then,
and covers a bare ``alembic`` command run against this environment.
"""

from __future__ import annotations

from alembic import context

from rnntune.service.store.migrate import VERSION_TABLE, lock
from rnntune.service.store.tables import Base


def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table":
        return name.startswith("rnntune_")
    return True


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    lock(connection)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
