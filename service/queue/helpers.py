"""The helper tickets' ends: a re-evaluation run (``rnntune_evaluations``) and the finalize step."""

from __future__ import annotations

import logging
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from rnntune.service.queue.common import _BACK, _DONE, _S, FRESH, Claim, Settled, _expect, _study_state, db_now
from rnntune.service.queue.studies import _maybe_done
from rnntune.service.queue.tickets import _held
from rnntune.service.store.tables import ENDED, EvaluationRow, EvaluationState, StudyState, TicketState

log = logging.getLogger("rnntune.queue")


def evaluation(session: Session, ticket_id: int) -> EvaluationRow | None:
    """The re-evaluation run a ``reeval`` ticket stands for."""
    return session.scalar(select(EvaluationRow).where(EvaluationRow.ticket_id == ticket_id))


def settle_reeval(
    session: Session,
    claim: Claim,
    worker_id: str,
    *,
    value: float | None = None,
    error: str | None = None,
    final: bool = False,
    counts: bool = True,
    best_epoch: int | None = None,
    seconds: float | None = None,
) -> Settled:
    """A ``reeval`` ticket's end, in one transaction, only while this worker holds it (so a
    settle retried after a lost acknowledgement changes nothing twice, and the run counts once):

    - ``value``: the run's metric; its evaluation is ``complete`` and the ticket done;
    - ``error`` and ``final``: the evaluation is ``failed`` with the error, the ticket done;
    - ``error``, not final: the ticket goes back to the queue (cancelled if the study ended);
      ``counts`` adds one to the evaluation's ``failures`` (an error; not a pause or shutdown).

    The last reeval ticket spent queues the finalize ticket (:func:`_maybe_done`)."""
    conn, mine, study = _held(session, claim, worker_id)
    if study is None or study.ticket is None:
        session.rollback()
        return Settled(held=False)
    state = StudyState(study.state)
    row = cast(Table, EvaluationRow.__table__)
    if value is None and not final:
        back = TicketState.CANCELLED if state in ENDED else TicketState.QUEUED
        _expect(conn.execute(_BACK, {**mine, **FRESH, "state": back, "error": error}), "reeval back")
        if counts:
            conn.execute(
                update(row).where(row.c.ticket_id == claim.ticket_id).values(failures=row.c.failures + 1, error=error)
            )
        session.commit()
        return Settled(True, back, True, state)
    done = value is not None
    _expect(
        conn.execute(
            update(row)
            .where(row.c.ticket_id == claim.ticket_id, row.c.state == EvaluationState.PENDING)
            .values(
                state=EvaluationState.COMPLETE if done else EvaluationState.FAILED,
                value=value,
                best_epoch=best_epoch,
                error=None if done else error,
                worker_id=worker_id,
                seconds=seconds,
                finished_at=db_now(),
            )
        ),
        "evaluation",
    )
    result = "COMPLETE" if done else "FAIL"
    _expect(conn.execute(_DONE, {**mine, "result": result, "trial_id": None, "number": None}), "reeval done")
    _maybe_done(session, claim.study_id)
    session.commit()
    return Settled(True, TicketState.DONE, True, _study_state(session, claim.study_id))


def settle_finalize(session: Session, claim: Claim, worker_id: str, *, error: str | None, final: bool) -> Settled:
    """The finalize ticket's end: done (``error`` None, or a last failure that is ``final``:
    the study still ends done, with the error as its reason) or back to the queue."""
    conn, mine, study = _held(session, claim, worker_id)
    if study is None or study.ticket is None:
        session.rollback()
        return Settled(held=False)
    if error is not None and not final:
        back = {**mine, **FRESH, "state": TicketState.QUEUED, "error": error}
        _expect(conn.execute(_BACK, back), "finalize back")
        session.commit()
        return Settled(True, TicketState.QUEUED, True, StudyState(study.state))
    result = "FAIL" if error is not None else "COMPLETE"
    _expect(conn.execute(_DONE, {**mine, "result": result, "trial_id": None, "number": None}), "finalize done")
    if error is not None:
        conn.execute(update(_S).where(_S.c.id == claim.study_id).values(reason=error))
    _maybe_done(session, claim.study_id)
    session.commit()
    return Settled(True, TicketState.DONE, True, _study_state(session, claim.study_id))
