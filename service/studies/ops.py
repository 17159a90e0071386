"""A study after its budget: extend it, delete it (``POST …/extend``, ``DELETE …``; docs/studies.md).

**Extend** gives a study K more trial tickets. A study still searching (queued, running, paused)
gets them in its current round: its budget grows. A study that ended (done, cancelled, or failed
because ``max_failed_trials`` trials failed) starts a new *round*: running again, ``n_trials`` =
its finished trials + K, a fresh failure budget (``n_failed`` 0) and, with ``timeout_s``, a fresh
deadline from now. The Optuna study is the same, so the sampler sees every earlier trial (TPE's
``n_startup_trials`` counts them: no random start again). When the round's tickets are spent its
reeval and finalize tickets are queued as the first round's were (``queue.studies._maybe_done`` looks at
the current round's tickets only), and the model it stores becomes the current version only if
it is better (``model_store``). Refused (409) while the study makes its result (a reeval or
finalize ticket open) or while a worker still holds one of its tickets; a study that failed for
another reason (its data) stays failed.

**Delete** removes the study: its Optuna study (``optuna.delete_study``: trials, values,
attributes), then our rows (tickets, evaluations, model versions, the study) in one
transaction. Refused (409) while a worker holds one of its tickets, unless forced: then the
study is cancelled first (trials stop at their next epoch) and the call waits up to
``RNNTUNE_DELETE_WAIT_S`` for the workers to let go; a worker that is still holding one after
that (dead, or stuck) finds nothing when it settles (``queue.settle``: no study) and goes on.
A deleted study's name is free at once. Workers forget what they cached of it at their next
housekeeping (``Worker._forget_deleted``).
"""

from __future__ import annotations

import contextlib
import logging
import time

import optuna
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from rnntune.service import queue
from rnntune.service.spec import INT32_MAX, grid_size, try_stored_spec
from rnntune.service.store.tables import (
    ENDED,
    EvaluationRow,
    ModelRow,
    StudyRow,
    StudyState,
    TicketKind,
    TicketRow,
    TicketState,
)

log = logging.getLogger("rnntune.study_ops")

POLL_S = 0.25  # how often a forced delete looks whether the workers let go


class Refused(Exception):
    """Not in the study's state (409), with the reason."""


class Invalid(Exception):
    """A value the request cannot have (422): ``field`` and the reason."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def held_tickets(session: Session, study_id: int) -> int:
    """Tickets of the study that a worker holds (leased or running)."""
    return session.execute(
        select(func.count()).where(TicketRow.study_id == study_id, TicketRow.state.in_(queue.HELD))
    ).scalar_one()


def _making_result(session: Session, study: StudyRow) -> bool:
    """Whether the current round's reeval or finalize tickets are open (the study is finalizing)."""
    return bool(
        session.scalar(
            select(func.count()).where(
                TicketRow.study_id == study.id,
                TicketRow.round == study.round,
                TicketRow.kind.in_((queue.REEVAL, queue.FINALIZE)),
                TicketRow.state.in_(queue.OPEN),
            )
        )
    )


def extendable(session: Session, study: StudyRow) -> None:
    """Raise :class:`Refused` unless the study can take more trial tickets now."""
    if _making_result(session, study):
        raise Refused(f"study {study.name!r} is finalizing (making its result); extend it once it is done")
    if study.state == StudyState.FAILED and study.n_failed < study.max_failed:
        raise Refused(
            f"study {study.name!r} failed ({study.reason}); only a study that failed by max_failed_trials can be extended"
        )
    past_deadline = select(StudyRow.deadline_at <= queue.db_now()).where(StudyRow.id == study.id)
    if study.state not in ENDED and study.deadline_at is not None and session.scalar(past_deadline):
        raise Refused(
            f"study {study.name!r} reached budget.timeout_s and is ending; extend it once it is done "
            "(a new round has a fresh deadline)"
        )
    held = held_tickets(session, study.id)
    if study.state in ENDED and held:
        raise Refused(f"study {study.name!r} ended, but workers still hold {held} of its tickets; try again shortly")


def extend_study(session: Session, study_id: int, n_trials: int, *, max_trials_per_study: int) -> StudyRow:
    """Add ``n_trials`` trial tickets (see the module docstring). Commits; returns the study row."""
    if not 1 <= n_trials <= INT32_MAX:
        raise Invalid("n_trials", f"must be in [1, {INT32_MAX}], but got {n_trials}")
    study = session.get(StudyRow, study_id, with_for_update=True, populate_existing=True)  # lock order: study first
    assert study is not None  # the route found it
    extendable(session, study)
    ended = study.state in ENDED
    trial_tickets = (TicketRow.study_id == study_id, TicketRow.kind == TicketKind.TRIAL)
    finished = session.execute(
        select(func.count()).where(*trial_tickets, TicketRow.state == TicketState.DONE)
    ).scalar_one()
    total = (finished if ended else study.n_trials) + n_trials
    if total > max_trials_per_study:
        raise Invalid(
            "n_trials",
            f"{study.n_trials if not ended else finished} + {n_trials} = {total} trials, over this server's limit "
            f"RNNTUNE_MAX_TRIALS_PER_STUDY={max_trials_per_study}",
        )
    spec = try_stored_spec(study)
    if spec is None:
        raise Refused(f"study {study.name!r} has a spec that no longer parses; it cannot run more trials")
    if spec.sampler.name == "grid" and total > grid_size(spec):
        raise Invalid("n_trials", f"{total} trials exceed the grid's {grid_size(spec)} points")
    last = session.execute(select(func.max(TicketRow.seq)).where(TicketRow.study_id == study_id)).scalar_one()
    if ended:
        _new_round(session, study)
    study.n_trials = total
    session.add_all(
        TicketRow(study_id=study_id, seq=last + 1 + i, round=study.round, params=None) for i in range(n_trials)
    )
    session.commit()
    log.info("study %s extended by %d trials (round %d, n_trials %d)", study.name, n_trials, study.round, total)
    return study


def _new_round(session: Session, study: StudyRow) -> None:
    """An ended study runs again: the next round, a fresh failure budget and deadline."""
    study.round += 1
    study.state = StudyState.RUNNING if study.started_at is not None else StudyState.QUEUED
    study.reason = None
    study.finished_at = None
    study.n_failed = 0
    session.flush()
    if study.started_at is not None:
        deadline = queue.db_now(StudyRow.timeout_s) if study.timeout_s is not None else None
        session.execute(update(StudyRow).where(StudyRow.id == study.id).values(deadline_at=deadline))


def delete_study(
    session: Session, storage: optuna.storages.BaseStorage, study_id: int, *, force: bool, wait_s: float
) -> None:
    """Delete the study (see the module docstring). Raises :class:`Refused` while its tickets
    are held and ``force`` is false. Commits."""
    study = session.get(StudyRow, study_id)
    assert study is not None  # the route found it
    held = held_tickets(session, study_id)
    if held and not force:
        raise Refused(f"study {study.name!r} has {held} trials running; cancel it and wait, or DELETE …?force=true")
    if study.state not in ENDED:
        queue.finish_study(session, study_id, StudyState.CANCELLED, "being deleted")
        session.commit()
    if held:
        _wait_released(session, study_id, wait_s)
    name = study.name
    with contextlib.suppress(KeyError):  # gone already (an earlier delete got this far): ours follow
        optuna.delete_study(study_name=name, storage=storage)
    _delete_rows(session, study_id)
    session.commit()
    log.info("study %s deleted", name)


def _wait_released(session: Session, study_id: int, wait_s: float) -> None:
    """Wait up to ``wait_s`` for the workers to settle the cancelled study's tickets."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        session.rollback()  # a fresh snapshot each look
        if not held_tickets(session, study_id):
            return
        time.sleep(POLL_S)
    log.warning("study %d: workers still hold tickets after %.0fs; deleting it all the same", study_id, wait_s)


def _delete_rows(session: Session, study_id: int) -> None:
    """Every row of ours that belongs to the study, children first (SQLite may not enforce the
    foreign keys' cascades), the study row locked first (the lock order everywhere)."""
    session.execute(select(StudyRow.id).where(StudyRow.id == study_id).with_for_update())
    session.execute(delete(EvaluationRow).where(EvaluationRow.study_id == study_id))
    session.execute(delete(ModelRow).where(ModelRow.study_id == study_id))
    session.execute(delete(TicketRow).where(TicketRow.study_id == study_id))
    session.execute(delete(StudyRow).where(StudyRow.id == study_id))
