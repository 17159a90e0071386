"""A throwaway database per benchmark run on the PostgreSQL server (RNNTUNE_BENCH_PG)."""

from __future__ import annotations

import os
import uuid

import sqlalchemy as sa

ADMIN = os.environ.get("RNNTUNE_BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def new_db() -> str:
    name = f"rnntune_bench_{uuid.uuid4().hex[:8]}"
    eng = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_db(url: str) -> None:
    eng = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    eng.dispose()
