"""The one judge of a lost worker: a lease that expired, decided (:func:`judge`) and applied under
the study row's lock, the Optuna trial failed in the same transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rnntune.service.queue.claimable import expired
from rnntune.service.queue.common import _S, _T, FRESH, REEVAL, _expect, _lock_study, db_now
from rnntune.service.queue.studies import _count_failure, _maybe_done
from rnntune.service.store import optuna_compat
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.tables import ENDED, EvaluationRow, StudyState, TicketKind, TicketState

log = logging.getLogger("rnntune.queue")

_EXPIRED = expired(_T)


_LOST_WORKER = "worker lost: lease expired"


@dataclass(frozen=True)
class Verdict:
    """What the lease sweep does with one expired ticket (:func:`judge`)."""

    ticket: TicketState  # DONE, QUEUED or CANCELLED
    outcome: str | None = None  # DONE: the trial's COMPLETE / PRUNED
    fail_trial: dict[str, Any] | None = None  # fail its RUNNING trial, with these user attributes
    counted: str | None = None  # a counted failure, with this reason
    columns: dict[str, Any] = field(default_factory=lambda: dict(FRESH))  # params, retry_of, deaths
    error: str = "lease expired"


def judge(ticket: Any, trial: optuna_compat.TrialFacts | None, study_ended: bool, max_retries: int) -> Verdict:
    """The one judge of a lost worker: what an expired trial ticket and its Optuna trial mean.

    - its trial COMPLETE / PRUNED: the ticket is spent (the worker died between ``tell`` and settle);
    - the study ended: the ticket is cancelled, a RUNNING trial failed as interrupted;
    - the trial recorded ``fail_reason`` (its worker died after recording why training failed,
      before or after Optuna's ``tell``): the counted failure that was never settled;
    - FAIL and ``interrupted`` (stopped, then died before settling): queued with its parameters;
    - FAIL otherwise: a counted failure;
    - RUNNING, or no trial yet: the worker died on it. Death N of these parameters: up to
      ``max_retries`` the ticket is queued with them (the trial failed as interrupted), the next
      death is a counted failure "worker lost N times on this trial"."""
    keep = {"params": ticket.params, "retry_of": ticket.retry_of, "deaths": ticket.deaths}
    if trial is None:  # no trial started under it (or its worker died between ask and recording it)
        deaths = ticket.deaths + 1
        if deaths > max_retries:
            return Verdict(TicketState.QUEUED, counted=f"worker lost {deaths} times before its trial started")
        return Verdict(TicketState.QUEUED, columns={**keep, "deaths": deaths})
    if trial.state in ("COMPLETE", "PRUNED"):
        return Verdict(TicketState.DONE, outcome=trial.state)
    running = trial.state == "RUNNING"
    if study_ended:
        return Verdict(TicketState.CANCELLED, fail_trial={TrialAttr.INTERRUPTED: _LOST_WORKER} if running else None)
    attrs = trial.user_attrs
    if TrialAttr.FAIL_REASON in attrs:
        return Verdict(
            TicketState.QUEUED,
            fail_trial={} if running else None,
            counted=attrs.get(TrialAttr.ERROR) or attrs[TrialAttr.FAIL_REASON],
        )
    retry = {"params": trial.params or ticket.params, "retry_of": trial.number if trial.params else ticket.retry_of}
    if not running:
        if TrialAttr.INTERRUPTED in attrs:
            return Verdict(TicketState.QUEUED, columns={**retry, "deaths": ticket.deaths})
        return Verdict(TicketState.QUEUED, counted="the trial failed and its worker was lost before settling it")
    deaths = ticket.deaths + 1
    if deaths > max_retries:
        reason = f"worker lost {deaths} times on this trial; last: lease expired"
        return Verdict(
            TicketState.QUEUED,
            fail_trial={TrialAttr.FAIL_REASON: "worker lost", TrialAttr.ERROR: reason},
            counted=reason,
        )
    return Verdict(
        TicketState.QUEUED, fail_trial={TrialAttr.INTERRUPTED: _LOST_WORKER}, columns={**retry, "deaths": deaths}
    )


def requeue_expired(session: Session, *, max_retries: int = 2) -> int:
    """Judge the tickets whose lease ran out (their worker died, or lost the database for a lease
    period): each study's under its row lock, each ticket with its Optuna trial in the same
    transaction (:func:`judge`). This is the only place a lost worker's trial changes state: no
    Optuna heartbeat runs. Reeval and finalize tickets go back to the queue (a reeval counts a
    failure toward ``max_retries``). Returns how many tickets went back to the queue."""
    conn = session.connection()
    n_back = 0
    for study_id in conn.scalars(select(_T.c.study_id).where(_EXPIRED).distinct()).all():
        _lock_study(session, study_id)  # lock order: study row, then tickets
        # read again under the lock: another sweeper may have judged them meanwhile
        tickets = conn.execute(select(_T).where(_T.c.study_id == study_id, _EXPIRED).order_by(_T.c.id)).all()
        if not tickets:
            continue
        study = conn.execute(select(_S.c.state, _S.c.n_failed, _S.c.max_failed).where(_S.c.id == study_id)).one()
        trials = optuna_compat.trial_facts(conn, [t.trial_id for t in tickets if t.trial_id is not None])
        for ticket in tickets:
            if ticket.kind != TicketKind.TRIAL:
                n_back += _requeue_helper_ticket(conn, ticket, StudyState(study.state) in ENDED)
                continue
            verdict = judge(ticket, trials.get(ticket.trial_id), StudyState(study.state) in ENDED, max_retries)
            n_back += _apply(session, ticket, verdict, study)
            study = conn.execute(select(_S.c.state, _S.c.n_failed, _S.c.max_failed).where(_S.c.id == study_id)).one()
        if StudyState(study.state) not in ENDED:
            _maybe_done(session, study_id)
    return n_back


def _apply(session: Session, ticket: Any, verdict: Verdict, study: Any) -> int:
    """Carry out one verdict; returns 1 when the ticket went back to the queue."""
    conn = session.connection()
    if verdict.fail_trial is not None:
        optuna_compat.fail_running_trial(conn, ticket.trial_id, verdict.fail_trial, db_now())
    mine = (_T.c.id == ticket.id, _EXPIRED)
    if verdict.ticket == TicketState.DONE:
        done = {
            "state": TicketState.DONE,
            "outcome": verdict.outcome,
            "lease_expires_at": None,
            "finished_at": db_now(),
        }
        _expect(conn.execute(update(_T).where(*mine).values(**done)), "lost ticket done")
        return 0
    back: dict[str, Any] = {
        "state": verdict.ticket,
        "worker_id": None,
        "lease_expires_at": None,
        "trial_id": None,
        "trial_number": None,
    }
    if verdict.ticket == TicketState.CANCELLED:
        back["finished_at"] = db_now()
    error = verdict.counted or verdict.error
    _expect(conn.execute(update(_T).where(*mine).values(**back, **verdict.columns, last_error=error)), "lost ticket")
    if verdict.counted is not None:
        _count_failure(session, ticket.study_id, study, verdict.counted)
    return int(verdict.ticket == TicketState.QUEUED)


def _requeue_helper_ticket(conn: Any, ticket: Any, study_ended: bool) -> int:
    """An expired reeval or finalize ticket: back to the queue (a reeval's run counts a failure
    toward ``max_retries``), or cancelled when the study ended."""
    mine = (_T.c.id == ticket.id, _EXPIRED)
    if study_ended:
        conn.execute(
            update(_T).where(*mine).values(state=TicketState.CANCELLED, lease_expires_at=None, finished_at=db_now())
        )
        return 0
    conn.execute(
        update(_T)
        .where(*mine)
        .values(state=TicketState.QUEUED, worker_id=None, lease_expires_at=None, last_error="lease expired")
    )
    if ticket.kind == REEVAL:
        conn.execute(
            update(EvaluationRow)
            .where(EvaluationRow.ticket_id == ticket.id)
            .values(failures=EvaluationRow.failures + 1, error="lease expired")
        )
    return 1


def requeue_expired_now(session: Session, *, max_retries: int = 2) -> int:
    n = requeue_expired(session, max_retries=max_retries)
    session.commit()
    return n
