"""/v1/studies: submit a study, list studies, read one, page through its trials."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from rnntune.service import queue
from rnntune.service.api.access import CallerDep, OwnedStudy
from rnntune.service.api.deps import SessionDep, SettingsDep, StorageDep, study_or_404
from rnntune.service.api.schemas import (
    BestTrial,
    Problem,
    ReevaluationProgress,
    StudyList,
    StudyPublic,
    TrialsPage,
    ValidationProblem,
)
from rnntune.service.data import datasets
from rnntune.service.reports import results
from rnntune.service.spec import (
    SpecError,
    StudySpec,
    check_paths,
    load_yaml,
    parse_spec,
    root_text_errors,
    try_stored_spec,
)
from rnntune.service.store.tables import StudyRow
from rnntune.service.studies import registry, val_split, warm_start
from rnntune.service.trials import command, selection

router = APIRouter(prefix="/v1/studies", tags=["studies"])
StudyState = Literal[registry.PUBLIC_STATES]  # type: ignore[valid-type]
TrialState = Literal[results.TRIAL_STATES]  # type: ignore[valid-type]

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/StudySpec"}},
            "application/yaml": {"schema": {"$ref": "#/components/schemas/StudySpec"}},
        },
    }
}


def _unprocessable(errors: list[tuple[str, str]]) -> HTTPException:
    detail = [{"loc": ["body", *[p for p in loc.split(".") if p]], "msg": msg} for loc, msg in errors]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def _decode(body: bytes, content_type: str) -> Any:
    try:
        if content_type.split(";")[0].strip() in YAML_TYPES:
            return load_yaml(body)  # no anchors/aliases: no alias bombs
        return json.loads(body)  # NaN / Infinity decode, and parse_spec names them as errors
    except (ValueError, yaml.YAMLError) as exc:
        raise _unprocessable([("", f"the body is not valid JSON/YAML: {exc}")]) from None
    except RecursionError:
        raise _unprocessable([("", "the body nests too deeply to be a spec")]) from None


async def _read_body(request: Request, limit_kb: int) -> bytes:
    """The request body, read as it streams and refused past ``limit_kb`` KiB (the BodyLimit
    middleware holds every route to it too; this keeps the handler bounded on its own)."""
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit_kb * 1024:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"request body over the body limit RNNTUNE_MAX_BODY_KB={limit_kb} ({limit_kb * 1024} bytes)",
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=SPEC_BODY,
    responses={
        200: {"model": StudyPublic, "description": "the same spec was submitted before: that study"},
        409: {"model": Problem, "description": "the name is taken by a different spec"},
        422: {"model": ValidationProblem, "description": "the spec is invalid; each error names its field"},
    },
)
async def create_study(
    request: Request,
    response: Response,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> StudyPublic:
    """Submit a study spec (JSON or YAML); its trials are queued for the workers."""
    body = await _read_body(request, settings.max_body_kb)
    data = _decode(body, request.headers.get("content-type", "application/json"))
    try:  # the server's limits are checked before anything (a grid, a sampler) is built
        spec = await run_in_threadpool(parse_spec, data, settings.limits)
    except SpecError as exc:
        raise _unprocessable(exc.errors) from None
    # only files under RNNTUNE_DATA_ROOTS; an absolute script only under RNNTUNE_COMMAND_DIRS
    path_errors = check_paths(spec, settings.roots) + command.spec_errors(spec, settings)
    # a server file's words and labels reach the model file only with the operator's consent
    path_errors += [e for e in root_text_errors(spec, settings.allow_root_text) if e[0] not in dict(path_errors)]
    if path_errors:
        raise _unprocessable(path_errors)
    # data.dataset exists and fits; an .npz's own width and length within the limits
    data_errors = await run_in_threadpool(datasets.check_spec, session, spec, settings.limits)
    if data_errors:
        raise _unprocessable(data_errors)
    # warm_start: the studies it names exist and their spaces fit (a resubmission is that study)
    warm = None
    if spec.warm_start is not None and registry.get_study(session, spec.name) is None:
        warm, warm_errors = await run_in_threadpool(
            warm_start.plan, session, spec, max_history=settings.max_warm_start_history
        )
        if warm_errors:
            raise _unprocessable(warm_errors)
    try:
        row, created = await run_in_threadpool(
            registry.create_study, session, storage, spec, owner=caller.name, warm=warm
        )
    except registry.StudyConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    detail = await run_in_threadpool(_detail, session, row)
    detail.warnings = await run_in_threadpool(val_split.submit_warnings, session, spec, settings.small_val_split)
    return detail


@router.get("")
def list_studies(
    session: SessionDep, settings: SettingsDep, state: Annotated[StudyState | None, Query()] = None
) -> StudyList:
    """List studies with their state, trial counts and best value."""
    rows = registry.list_studies(session, state=state)
    return StudyList(items=registry.summaries(session, rows, lost_after_s=settings.lease_s))


def _detail(session: Session, row: StudyRow, lost_after_s: float = 90.0) -> StudyPublic:
    summary = registry.summaries(session, [row], lost_after_s=lost_after_s)[0]
    spec = try_stored_spec(row)  # None: it no longer parses (the summary's reason says why)
    best, progress = None, None
    if spec is not None:
        assert spec.direction is not None  # a parsed spec has one: given, or its metric's
        best = results.best_trial(session, row.optuna_study_id, spec.direction)
        progress = selection.progress(session, row.id, spec)
    return StudyPublic(
        **dict(summary),  # the summary's fields, as they are (StudyPublic extends StudySummary)
        spec=row.spec,
        best_trial=None if best is None else BestTrial.model_validate(best, from_attributes=True),
        reevaluations=None if progress is None else ReevaluationProgress.model_validate(progress),
    )


@router.get("/{name}", responses={404: {"model": Problem}})
def get_study(name: str, session: SessionDep, settings: SettingsDep) -> StudyPublic:
    """A study: its spec, counts, and best trial with its per-epoch curve."""
    return _detail(session, study_or_404(session, name), settings.lease_s)


@router.get("/{name}/trials", responses={404: {"model": Problem}})
def list_trials(
    name: str,
    session: SessionDep,
    after: Annotated[int | None, Query(ge=-1, le=2**31 - 1, description="trial number to start after (cursor)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    state: Annotated[TrialState | None, Query()] = None,
) -> TrialsPage:
    """Page through a study's trials in trial-number order (keyset cursor ``after``)."""
    row = study_or_404(session, name)
    items = results.trials_page(session, row.optuna_study_id, after=after, limit=limit + 1, state=state)
    more = len(items) > limit
    items = items[:limit]
    # one validation of the page (a model per row would cost ~1.5 µs a trial more)
    return TrialsPage.model_validate(
        {"items": items, "next_after": items[-1].number if more else None}, from_attributes=True
    )


def _control(row, session, action) -> StudyPublic:
    try:
        action(session, row.id)
    except queue.BadTransition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    session.refresh(row)
    return _detail(session, row)


CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "another owner's study (owners enforced), or a read token"},
    404: {"model": Problem},
    409: {"model": Problem, "description": "not allowed in the study's state"},
}


@router.post("/{name}/cancel", responses=CONTROL_RESPONSES)
def cancel_study(row: OwnedStudy, session: SessionDep) -> StudyPublic:
    """Cancel: no new trial starts; running trials stop at their next epoch boundary."""
    return _control(row, session, queue.cancel_study)


@router.post("/{name}/pause", responses=CONTROL_RESPONSES)
def pause_study(row: OwnedStudy, session: SessionDep) -> StudyPublic:
    """Pause: running trials stop at their next epoch boundary and are re-queued as they were."""
    return _control(row, session, queue.pause_study)


@router.post("/{name}/resume", responses=CONTROL_RESPONSES)
def resume_study(row: OwnedStudy, session: SessionDep) -> StudyPublic:
    """Resume a paused study toward the same budget."""
    return _control(row, session, queue.resume_study)


def spec_schema_components() -> dict:
    """StudySpec and its parts as OpenAPI components (the request body is parsed by hand)."""
    schema = StudySpec.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"StudySpec": schema, **defs}
