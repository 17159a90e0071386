"""Alembic environment for rnntune's own tables.

Our history lives in ``rnntune_alembic_version``, and only ``rnntune_*`` tables are compared or
touched, so Optuna's tables and Optuna's own alembic history (``alembic_version``) never are.
On PostgreSQL an advisory lock serialises processes that start together (API + workers).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from rnntune.service.migrate import VERSION_TABLE
from rnntune.service.tables import Base

LOCK_KEY = 0x726E6E74  # "rnnt"


def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table":
        return name.startswith("rnntune_")
    return True


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
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
