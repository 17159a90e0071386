"""/v1/studies/{name}/extend, DELETE /v1/studies/{name}, /v1/studies/{name}/models: a study after its budget."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from rnntune.service.api.access import OwnedStudy
from rnntune.service.api.deps import SessionDep, SettingsDep, StorageDep, study_or_404
from rnntune.service.api.routes.studies import CONTROL_RESPONSES, _detail
from rnntune.service.api.schemas import (
    ExtendRequest,
    ModelVersion,
    ModelVersionList,
    Problem,
    StudyPublic,
    ValidationProblem,
)
from rnntune.service.spec import stored_spec
from rnntune.service.store import model_store
from rnntune.service.studies import ops as study_ops

router = APIRouter(prefix="/v1/studies", tags=["studies"])


@router.post(
    "/{name}/extend",
    responses={
        **CONTROL_RESPONSES,
        400: {"model": Problem, "description": "the body is not JSON"},
        409: {"model": Problem, "description": "finalizing, failed for a reason other than its budget, or still held"},
        422: {"model": ValidationProblem, "description": "n_trials out of range or over the server's limit"},
    },
)
def extend_study(row: OwnedStudy, body: ExtendRequest, session: SessionDep, settings: SettingsDep) -> StudyPublic:
    """Run more trials: a done, cancelled or budget-failed study runs again with the whole history; a searching one's budget grows."""
    try:
        study_ops.extend_study(session, row.id, body.n_trials, max_trials_per_study=settings.max_trials_per_study)
    except study_ops.Refused as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    except study_ops.Invalid as exc:
        session.rollback()
        detail = [{"loc": ["body", exc.field], "msg": str(exc)}]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail) from None
    session.refresh(row)
    return _detail(session, row, settings.lease_s)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**CONTROL_RESPONSES, 409: {"model": Problem, "description": "trials are running (and not ?force=true)"}},
)
async def delete_study(
    row: OwnedStudy,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    force: Annotated[bool, Query(description="cancel its running trials first and wait for the workers")] = False,
) -> Response:
    """Delete a study: its trials, tickets, model versions and Optuna study; the name is free afterwards."""
    try:
        await run_in_threadpool(
            study_ops.delete_study, session, storage, row.id, force=force, wait_s=settings.delete_wait_s
        )
    except study_ops.Refused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/models", responses={404: {"model": Problem}})
def list_models(name: str, session: SessionDep) -> ModelVersionList:
    """Every stored version of the study's model (one per budget and extension) and which is current."""
    row = study_or_404(session, name)
    spec = stored_spec(row)
    assert spec.direction is not None  # a parsed spec has one: given, or its metric's
    return ModelVersionList(
        study=row.name,
        metric=spec.metric,
        direction=spec.direction,
        items=[
            ModelVersion(
                version=m.version,
                trial_number=m.trial_number,
                metric=m.metric,
                current=m.is_current,
                sha256=m.sha256,
                size=m.size,
                created_at=m.created_at,
            )
            for m in model_store.versions(session, row.id)
        ],
    )
