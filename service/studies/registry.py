"""Studies as the API sees them: create (Optuna study + our rows), find, summarise."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rnntune.service import queue
from rnntune.service.api.schemas import StudySummary, TrialCounts
from rnntune.service.reports import results
from rnntune.service.spec import StudySpec, broken_reason, try_stored_spec
from rnntune.service.store import optuna_compat
from rnntune.service.store.attrs import StudyAttr, TrialAttr
from rnntune.service.store.tables import STUDY_STATES, StudyRow, StudyState
from rnntune.service.studies import warm_start

ADOPT_WAIT_S = 2  # how long a creator waits for a concurrent creator's row before adopting


class StudyConflict(Exception):
    """The name is taken by a study with a different spec (or by a foreign Optuna study)."""


def spec_hash(spec: StudySpec) -> str:
    return hashlib.sha256(spec.canonical_json().encode()).hexdigest()


def get_study(session: Session, name: str) -> StudyRow | None:
    return session.scalar(select(StudyRow).where(StudyRow.name == name))


# Shown, not stored: a running study whose trials are all spent while its best model is trained
# again and stored (the finalize ticket). The queue keeps it ``running``.
FINALIZING = "finalizing"
PUBLIC_STATES = (*STUDY_STATES, FINALIZING)


def list_studies(session: Session, *, state: str | None = None) -> list[StudyRow]:
    q = select(StudyRow).order_by(StudyRow.created_at.desc(), StudyRow.id.desc())
    if state is not None:
        q = q.where(StudyRow.state == (StudyState.RUNNING if state == FINALIZING else state))
    rows = list(session.scalars(q))
    if state in (FINALIZING, StudyState.RUNNING):
        shown = _finalizing(session, rows)
        rows = [r for r in rows if (r.id in shown) == (state == FINALIZING)]
    return rows


def _finalizing(session: Session, rows: list[StudyRow]) -> set[int]:
    return queue.finalizing(session, [r.id for r in rows if r.state == StudyState.RUNNING])


def _same_or_conflict(row: StudyRow, digest: str) -> StudyRow:
    if row.spec_hash != digest:
        raise StudyConflict(f"a study named {row.name!r} already exists with a different spec")
    return row


def create_study(
    session: Session,
    storage: optuna.storages.BaseStorage,
    spec: StudySpec,
    *,
    owner: str | None = None,
    warm: warm_start.Plan | None = None,
) -> tuple[StudyRow, bool]:
    """Create the Optuna study, register it and queue its tickets (the first ones carry
    ``initial_trials``' parameters, then a warm start's, whose history goes to the Optuna study);
    ``owner``: the creating token's name (``service.api.access``).

    Idempotent: the same spec under an existing name returns that study (``created`` False);
    another spec under that name raises :class:`StudyConflict`. Optuna's unique study name is
    the lock between concurrent creators, our unique name the lock between adopters.

    Crash-safe: an Optuna study of that name without our row (its creator died between the two)
    is adopted when it has run no trial and its stored spec hash, if any, is this spec's."""
    digest = spec_hash(spec)
    existing = get_study(session, spec.name)
    if existing is not None:
        return _same_or_conflict(existing, digest), False
    try:
        study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions())
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        existing = _concurrent_row(session, spec.name)
        if existing is not None:
            return _same_or_conflict(existing, digest), False
        study = _adoptable(storage, spec, digest)
        created = False
    try:
        _record_spec(study, spec, digest)
        if warm is not None:
            warm_start.add_history(study, warm.history)
        row = queue.add_study(
            session,
            spec=spec,
            optuna_study_id=optuna_compat.study_id(study),
            spec_hash=digest,
            warm=warm.params if warm is not None else [],
        )
        row.owner = owner
        session.commit()
    except IntegrityError:
        # A concurrent adopter registered it first: that row is the study.
        session.rollback()
        existing = get_study(session, spec.name)
        if existing is None:
            raise
        return _same_or_conflict(existing, digest), False
    except BaseException:
        session.rollback()
        if created:
            optuna.delete_study(study_name=spec.name, storage=storage)
        raise
    return row, True


def _concurrent_row(session: Session, name: str) -> StudyRow | None:
    """Another request may be creating the study right now: its row, which follows within
    moments (``ADOPT_WAIT_S``), or None."""
    for _ in range(ADOPT_WAIT_S * 20):
        session.rollback()
        existing = get_study(session, name)
        if existing is not None:
            return existing
        time.sleep(0.05)
    return None


def _record_spec(study: optuna.Study, spec: StudySpec, digest: str) -> None:
    """The Optuna study's copy of the spec (its hash first: what an adopter compares) and the
    objectives' names, unless an earlier creator recorded them."""
    if study.user_attrs.get(StudyAttr.SPEC_HASH) is None:
        study.set_user_attr(StudyAttr.SPEC_HASH, digest)
        study.set_user_attr(StudyAttr.SPEC, spec.model_dump(mode="json"))
        optuna_compat.set_metric_names(study, spec.objective_names())  # the dashboard's labels, not "Objective 0"


def _adoptable(storage: optuna.storages.BaseStorage, spec: StudySpec, digest: str) -> optuna.Study:
    """The Optuna study named ``spec.name`` that has no row of ours, if rnntune may take it
    over: no trial beyond its queued initial ones, and no other spec's hash stored on it."""
    study = optuna.load_study(study_name=spec.name, storage=storage)
    stored = study.user_attrs.get(StudyAttr.SPEC_HASH)
    if stored is not None and stored != digest:
        raise StudyConflict(f"a study named {spec.name!r} was being created with a different spec")
    ran = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state != optuna.trial.TrialState.WAITING and TrialAttr.WARM_START_FROM not in t.user_attrs
    ]
    if ran or study.direction.name.lower() != spec.direction:
        raise StudyConflict(f"an Optuna study named {spec.name!r} exists in this storage but not in rnntune")
    return study


@dataclass(frozen=True)
class _Shown:
    """direction, metric and data as a summary shows them, and why a stored spec cannot run."""

    direction: str
    metric: str
    data: str
    broken: str | None = None


def _shown(row: StudyRow) -> _Shown:
    """A stored spec that no longer parses shows what its JSON says (strings only) and, while the
    study is active, why it cannot run."""
    spec = try_stored_spec(row)
    if spec is not None:
        assert spec.direction is not None  # a parsed spec has one: given, or its metric's
        return _Shown(spec.direction, spec.metric, _data_name(spec))
    raw = row.spec if isinstance(row.spec, dict) else {}
    raw_data = raw.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}

    def text(value: Any) -> str:
        return value if isinstance(value, str) else "unknown"

    return _Shown(text(raw.get("direction")), text(raw.get("metric")), text(data.get("name")), broken_reason(row))


def _data_name(spec: StudySpec) -> str:
    """What a study trains on: a data set's name, or (no data) its objective plugin or command."""
    if spec.data is not None:
        return spec.data.name
    plugin = spec.objective.plugin if spec.objective is not None else None  # a spec without data has an objective
    return f"objective plugin {plugin}" if plugin else "command"


def summaries(session: Session, rows: list[StudyRow], *, lost_after_s: float = 90.0) -> list[StudySummary]:
    """Counts per trial state and the best value for each study: two grouped queries in all.
    An active study that needs plugins or commands no live worker has says so in ``reason``."""
    live = None
    if any(r.requires and r.state in queue.ACTIVE and r.reason is None for r in rows):
        live = queue.live_capabilities(session, lost_after_s=lost_after_s)
    counts = results.trial_counts(session, [r.optuna_study_id for r in rows])
    finalizing = _finalizing(session, rows)
    shown = {r.id: _shown(r) for r in rows}
    best = results.best_values(
        session, {r.optuna_study_id: shown[r.id].direction for r in rows if shown[r.id].broken is None}
    )
    out = []
    for r in rows:
        c, s = counts[r.optuna_study_id], shown[r.id]
        active = r.state in (*queue.ACTIVE, StudyState.PAUSED)
        unrunnable = queue.unrunnable_reason(r.requires, live) if live is not None and r.state in queue.ACTIVE else None
        out.append(
            StudySummary(
                name=r.name,
                owner=r.owner,
                state=FINALIZING if r.id in finalizing else r.state,
                reason=r.reason or (s.broken if active else None) or unrunnable,
                direction=s.direction,
                metric=s.metric,
                data=s.data,
                n_trials=r.n_trials,
                finished=c["COMPLETE"] + c["PRUNED"],
                counts=TrialCounts(
                    complete=c["COMPLETE"],
                    pruned=c["PRUNED"],
                    failed=c["FAIL"] - c["INTERRUPTED"],
                    interrupted=c["INTERRUPTED"],
                    running=c["RUNNING"],
                    waiting=c["WAITING"],
                ),
                best_value=best.get(r.optuna_study_id),
                created_at=r.created_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
            )
        )
    return out
