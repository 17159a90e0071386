"""/v1/workers: the worker processes on this database, what each runs, and which went silent."""

from __future__ import annotations

from fastapi import APIRouter, Query

from rnntune.service import queue
from rnntune.service.api.deps import SessionDep, SettingsDep
from rnntune.service.api.schemas import WorkerList

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("")
def list_workers(
    session: SessionDep,
    settings: SettingsDep,
    include_stopped: bool = Query(False, description="also list workers that deregistered"),
) -> WorkerList:
    """Registered workers, newest first: host, pid, device, labels, state, the study, ticket
    and trial each runs, and its last heartbeat. A worker silent for a lease period
    (``RNNTUNE_LEASE_S``) without deregistering is ``lost``."""
    rows = queue.list_workers(session, lost_after_s=settings.lease_s, include_stopped=include_stopped)
    return WorkerList.model_validate({"items": rows})
