"""The study state machine: add a study with its tickets, count failures, finish it, its helper
tickets (re-evaluations, finalize) when the trial tickets are spent, timeouts, cancel / pause / resume."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from rnntune.service import routing
from rnntune.service.queue.common import (
    _COUNT_FAILURE,
    _STILL_OPEN,
    ACTIVE,
    FINALIZE,
    REEVAL,
    _expect,
    _lock_study,
    db_now,
)
from rnntune.service.reports import results
from rnntune.service.spec import StudySpec, broken_reason, try_stored_spec
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.tables import (
    EvaluationRow,
    EvaluationState,
    StudyRow,
    StudyState,
    TicketKind,
    TicketRow,
    TicketState,
)

log = logging.getLogger("rnntune.queue")


def add_study(
    session: Session, *, spec: StudySpec, optuna_study_id: int, spec_hash: str, warm: Sequence[dict[str, Any]] = ()
) -> StudyRow:
    """Register a study (its spec stored as JSON) and queue one ticket per trial of its budget,
    the first ones with the parameters of ``initial_trials``, then ``warm`` (a warm start's:
    service/studies/warm_start.py) (caller commits)."""
    budget = spec.budget
    row = StudyRow(
        name=spec.name,
        optuna_study_id=optuna_study_id,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec_hash,
        priority=spec.priority,
        labels=list(spec.labels),
        n_trials=budget.n_trials,  # validation sets it (grid: the grid's size)
        max_parallel=budget.max_parallel,
        max_failed=budget.max_failed_trials,
        timeout_s=budget.timeout_s,
        requires=routing.requirements(spec),
    )
    session.add(row)
    session.flush()
    # run first, as given: the first tickets carry them, each distinct entry once
    first = [*spec.initial_trials, *warm]
    initial = list({json.dumps(p, sort_keys=True, default=str): p for p in first}.values())
    session.add_all(
        TicketRow(study_id=row.id, seq=i, params=initial[i] if i < len(initial) else None) for i in range(row.n_trials)
    )
    return row


def study_keys(study_ids: list[int]):
    """(id, created_at) of these studies that exist: :attr:`Claim.study_key` of each."""
    return select(StudyRow.id, StudyRow.created_at).where(StudyRow.id.in_(study_ids))


def finish_study(session: Session, study_id: int, state: StudyState, reason: str | None = None) -> None:
    """End a study: no ticket of it will be claimed again. Held tickets notice at renewal."""
    session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id, StudyRow.state.in_((*ACTIVE, StudyState.PAUSED)))
        .values(state=state, reason=reason, finished_at=db_now())
    )
    session.execute(
        update(TicketRow)
        .where(TicketRow.study_id == study_id, TicketRow.state == TicketState.QUEUED)
        .values(state=TicketState.CANCELLED, finished_at=db_now())
    )


def _maybe_done(session: Session, study_id: int) -> bool:
    """When every trial ticket is spent, queue the study's re-evaluation tickets (``selection``:
    one per run of a candidate), and when those are spent (or at once, without a selection) its
    finalize ticket (retrain the winner, test it, store the model); when that is spent too, the
    study is done. Returns whether every trial ticket is spent. The caller holds the study row's
    lock."""

    def still_open(kind: str) -> bool:
        return bool(session.connection().scalar(_STILL_OPEN, {"study": study_id, "kind": kind}))

    if still_open(TicketKind.TRIAL):
        return False
    if still_open(REEVAL) or still_open(FINALIZE):
        return True
    study = session.get_one(StudyRow, study_id, with_for_update=True, populate_existing=True)
    if study.state not in ACTIVE:
        return True
    # this round's helper tickets only: an extended study made its earlier rounds' result already
    kinds = set(
        session.scalars(
            select(TicketRow.kind).where(TicketRow.study_id == study_id, TicketRow.round == study.round).distinct()
        )
    )
    spec = try_stored_spec(study)
    if spec is None:  # it no longer parses: nothing more can run, and it says why
        finish_study(session, study_id, StudyState.FAILED, broken_reason(study))
        return True
    own_training = spec.objective is not None  # an objective plugin or command: no model to store
    if FINALIZE not in kinds and not own_training and results.n_complete(session, study.optuna_study_id) > 0:
        if REEVAL not in kinds and not spec.selection.is_default and _add_reevals(session, study, spec):
            return True
        last = session.execute(select(func.max(TicketRow.seq)).where(TicketRow.study_id == study_id)).scalar_one()
        session.add(TicketRow(study_id=study_id, seq=last + 1, kind=FINALIZE, round=study.round))
        session.flush()
        return True
    session.execute(update(StudyRow).where(StudyRow.id == study_id).values(state=StudyState.DONE, finished_at=db_now()))
    return True


def _add_reevals(session: Session, study: StudyRow, spec: StudySpec) -> int:
    """The candidates (the ``selection.top_k`` best complete trials, or as many as completed)
    and one ``reeval`` ticket per run of each: every seed on every fold but (seed 0, last fold),
    which is the search trial itself, recorded as the candidate's first value. Tickets go in
    (seed, fold, candidate) order, so that every candidate's runs advance together. Returns how
    many tickets were queued."""
    sel = spec.selection
    direction = cast(str, spec.direction)  # validation sets it (the metric's, or required)
    candidates = results.top_trials(session, study.optuna_study_id, direction, sel.top_k)
    own = (0, sel.folds - 1)
    runs = [(s, f) for s in range(sel.seeds) for f in range(sel.folds) if (s, f) != own]
    last = session.execute(select(func.max(TicketRow.seq)).where(TicketRow.study_id == study.id)).scalar_one()
    for rank, trial in enumerate(candidates):
        session.add(
            EvaluationRow(
                study_id=study.id,
                round=study.round,
                trial_id=trial.trial_id,
                trial_number=trial.number,
                rank=rank,
                seed_index=own[0],
                fold=own[1],
                state=EvaluationState.COMPLETE,
                value=trial.value,
                best_epoch=trial.user_attrs.get(TrialAttr.BEST_EPOCH),
                finished_at=db_now(),
            )
        )
    tickets = []
    for i, ((seed_index, fold), (rank, trial)) in enumerate((r, c) for r in runs for c in enumerate(candidates)):
        ticket = TicketRow(study_id=study.id, seq=last + 1 + i, kind=REEVAL, round=study.round)
        tickets.append((ticket, rank, trial, seed_index, fold))
    session.add_all(t[0] for t in tickets)
    session.flush()
    session.add_all(
        EvaluationRow(
            study_id=study.id,
            round=study.round,
            ticket_id=ticket.id,
            trial_id=trial.trial_id,
            trial_number=trial.number,
            rank=rank,
            seed_index=seed_index,
            fold=fold,
        )
        for ticket, rank, trial, seed_index, fold in tickets
    )
    session.flush()
    return len(tickets)


def _timeout_reason(timeout_s: float | None) -> str:
    return f"budget.timeout_s={timeout_s:g} reached"


def _expire_timeouts(session: Session) -> None:
    """``budget.timeout_s`` after its start (``deadline_at``, database time) a study starts no
    new trial (the claim itself checks the deadline); here its queued trial tickets are
    cancelled, and once its running ones settle it is finalized like any other."""
    rows = session.execute(
        select(StudyRow.id, StudyRow.timeout_s).where(
            StudyRow.state == StudyState.RUNNING,
            StudyRow.deadline_at <= db_now(),
            select(TicketRow.id)
            .where(
                TicketRow.study_id == StudyRow.id,
                TicketRow.state == TicketState.QUEUED,
                TicketRow.kind == TicketKind.TRIAL,
            )
            .exists(),
        )
    ).all()
    for study_id, timeout_s in rows:
        _lock_study(session, study_id)
        _cancel_queued_trials(session, study_id, timeout_s)
        _maybe_done(session, study_id)


def _cancel_queued_trials(session: Session, study_id: int, timeout_s: float | None) -> None:
    session.execute(
        update(TicketRow)
        .where(
            TicketRow.study_id == study_id, TicketRow.state == TicketState.QUEUED, TicketRow.kind == TicketKind.TRIAL
        )
        .values(state=TicketState.CANCELLED, finished_at=db_now())
    )
    session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id, StudyRow.reason.is_(None))
        .values(reason=_timeout_reason(timeout_s))
    )


def _count_failure(session: Session, study_id: int, study: Any, reason: str | None) -> bool:
    """One counted failure of the study (``study``: its locked row's ``state``, ``n_failed``,
    ``max_failed``); reaching ``max_failed_trials`` fails the study with the failure's reason.
    Returns whether it did. The caller holds the study row's lock and commits."""
    _expect(session.connection().execute(_COUNT_FAILURE, {"study": study_id}), "failure count")
    n_failed = study.n_failed + 1
    if n_failed < study.max_failed or study.state not in (*ACTIVE, StudyState.PAUSED):
        return False
    finish_study(
        session,
        study_id,
        StudyState.FAILED,
        f"{n_failed} trials failed (max_failed_trials={study.max_failed}); last: {reason}",
    )
    return True


class BadTransition(Exception):
    """A cancel / pause / resume that the study's state does not allow."""


def cancel_study(session: Session, study_id: int) -> None:
    """No new trial starts; running ones stop at their next epoch boundary."""
    state = session.scalar(select(StudyRow.state).where(StudyRow.id == study_id).with_for_update())
    if state not in (*ACTIVE, StudyState.PAUSED):
        raise BadTransition(f"cannot cancel a study that is {state}")
    finish_study(session, study_id, StudyState.CANCELLED, "cancelled by request")
    session.commit()


def pause_study(session: Session, study_id: int) -> None:
    """No new trial starts; running ones stop at their next epoch boundary and are re-queued
    with the same parameters for when the study resumes."""
    study = session.get_one(StudyRow, study_id, with_for_update=True)
    if study.state not in ACTIVE:
        raise BadTransition(f"cannot pause a study that is {study.state}")
    study.state = StudyState.PAUSED
    session.commit()


def resume_study(session: Session, study_id: int) -> None:
    study = session.get_one(StudyRow, study_id, with_for_update=True)
    if study.state != StudyState.PAUSED:
        raise BadTransition(f"cannot resume a study that is {study.state}")
    study.state = StudyState.RUNNING if study.started_at else StudyState.QUEUED
    session.flush()
    _maybe_done(session, study_id)
    session.commit()
