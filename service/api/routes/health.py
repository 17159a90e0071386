"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from rnntune.service.api.deps import SessionDep
from rnntune.service.api.schemas import Health, Readiness
from rnntune.service.store import migrate

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", responses={503: {"description": "the database is unreachable or not migrated"}})
def readyz(session: SessionDep) -> Readiness:
    """The database answers and our tables are at the code's migration head."""
    try:
        session.execute(text("SELECT 1"))
        revision = migrate.current_on(session.connection())
    except SQLAlchemyError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"database: {type(exc).__name__}") from None
    if revision != migrate.head():
        detail = f"migrations: database at {revision}, code at {migrate.head()} (run `rnntune migrate`)"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=detail)
    return Readiness(status="ready", migration=revision)
