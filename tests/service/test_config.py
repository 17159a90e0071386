"""Settings: the database URLs hosting providers hand out work as they are."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa

from rnntune.service.config import Settings
from rnntune.service.store.db import make_engine
from tests.conftest import PG_ADMIN_URL


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_bare_postgres_urls_use_the_installed_driver(scheme):
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which rnntune does not install."""
    rest = PG_ADMIN_URL.split("://", 1)[1]
    settings = Settings(database_url=f"{scheme}://{rest}")
    assert settings.database_url == f"postgresql+psycopg2://{rest}"
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
    finally:
        engine.dispose()
    storage = optuna.storages.RDBStorage(settings.database_url)
    assert storage.get_all_studies() is not None


def test_explicit_drivers_and_sqlite_are_kept(tmp_path):
    for url in (f"sqlite:///{tmp_path}/x.db", "postgresql+psycopg2://u@h/db", "postgresql+psycopg://u@h/db"):
        assert Settings(database_url=url).database_url == url


def test_unsupported_url_names_the_scheme_but_not_the_password():
    with pytest.raises(ValueError) as exc:
        Settings(database_url="mysql://root:hunter2@db/rnntune")
    assert "mysql://" in str(exc.value) and "hunter2" not in str(exc.value)
