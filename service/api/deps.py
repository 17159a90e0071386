"""Request-scoped dependencies: settings, a session on our engine, the Optuna storage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import optuna
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from rnntune.service.config import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_storage(request: Request) -> optuna.storages.BaseStorage:
    return request.app.state.storage


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[optuna.storages.BaseStorage, Depends(get_storage)]


def study_or_404(session: Session, name: str):
    """Our registry row of study ``name``, or a 404 naming it."""
    from rnntune.service.studies import registry

    row = registry.get_study(session, name)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study named {name!r}")
    return row
