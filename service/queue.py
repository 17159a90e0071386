"""The trial queue: every write to our ticket and worker tables lives here.

A study's budget is ``n_trials`` tickets. A worker claims one ticket (one short statement:
``FOR UPDATE SKIP LOCKED`` picks it, the same ``UPDATE`` leases it, committed before training),
renews the lease while it trains, and marks it done when its Optuna trial finished (complete or
pruned). A ticket whose lease ran out goes back to the queue; a failed trial hands its ticket back
too, so a study always ends with exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import socket
from collections.abc import Container
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from rnntune.service import results
from rnntune.service.tables import StudyRow, TicketRow, WorkerRow, utcnow

ACTIVE = ("queued", "running")
OPEN = ("queued", "leased")

# The per-trial path (claim, complete) runs prebuilt Core statements with bound parameters:
# building ORM expressions anew on every call cost more than the statements themselves.
_S, _T = StudyRow.__table__, TicketRow.__table__
_CLAIMABLE = (
    select(_S.c.id, _S.c.name, _S.c.state, _S.c.labels, _S.c.max_parallel)
    .where(_S.c.state.in_(ACTIVE), select(_T.c.id).where(_T.c.study_id == _S.c.id, _T.c.state == "queued").exists())
    .order_by(_S.c.priority.desc(), _S.c.created_at, _S.c.id)
)
# A study's first queued ticket, through the partial index on queued tickets; one that another
# worker is claiming right now is skipped, not waited for.
_PICK = (
    select(_T.c.id)
    .where(_T.c.study_id == bindparam("study"), _T.c.state == "queued")
    .order_by(_T.c.seq)
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_LEASE = (
    update(_T)
    .where(_T.c.id == _PICK, _T.c.state == "queued")
    .values(
        state="leased",
        worker_id=bindparam("worker"),
        lease_expires_at=bindparam("expires"),
        attempts=_T.c.attempts + 1,
        started_at=bindparam("now"),
    )
    .returning(_T.c.id, _T.c.seq, _T.c.attempts, _T.c.kind)
)
_START_STUDY = (
    update(_S)
    .where(_S.c.id == bindparam("study"), _S.c.state == "queued")
    .values(state="running", started_at=bindparam("now"))
)
_SPEC = select(_S.c.spec).where(_S.c.id == bindparam("study"))
_LOCK_STUDY = select(_S.c.id).where(_S.c.id == bindparam("study")).with_for_update()
_DONE = (
    update(_T)
    .where(_T.c.id == bindparam("ticket"), _T.c.worker_id == bindparam("worker"), _T.c.state == "leased")
    .values(
        state="done",
        outcome=bindparam("result"),
        trial_number=bindparam("number"),
        lease_expires_at=None,
        finished_at=bindparam("now"),
    )
)
# EXISTS stops at the first open ticket (index on study, state) instead of counting them all.
_STILL_OPEN = select(
    select(_T.c.id)
    .where(_T.c.study_id == bindparam("study"), _T.c.state.in_(OPEN), _T.c.kind == bindparam("kind"))
    .exists()
)


@dataclass(frozen=True)
class Claim:
    ticket_id: int
    seq: int
    attempts: int
    study_id: int
    study_name: str
    spec: dict[str, Any] | None  # None: the caller said it has it (``known_specs``)
    kind: str = "trial"  # "finalize": retrain the best trial and store the model


# --- studies ---------------------------------------------------------------------------------


def add_study(session: Session, *, name: str, optuna_study_id: int, spec: dict, spec_hash: str) -> StudyRow:
    """Register a study and queue one ticket per trial of its budget (caller commits)."""
    budget = spec["budget"]
    row = StudyRow(
        name=name,
        optuna_study_id=optuna_study_id,
        spec=spec,
        spec_hash=spec_hash,
        priority=spec.get("priority", 0),
        labels=spec.get("labels", []),
        n_trials=budget["n_trials"],
        max_parallel=budget.get("max_parallel"),
        max_failed=budget["max_failed_trials"],
        timeout_s=budget.get("timeout_s"),
    )
    session.add(row)
    session.flush()
    session.add_all(TicketRow(study_id=row.id, seq=i) for i in range(row.n_trials))
    return row


def finish_study(session: Session, study_id: int, state: str, reason: str | None = None) -> None:
    """End a study: no ticket of it will be claimed again. Leased tickets notice at renewal."""
    now = utcnow()
    session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id, StudyRow.state.in_((*ACTIVE, "paused")))
        .values(state=state, reason=reason, finished_at=now)
    )
    session.execute(
        update(TicketRow)
        .where(TicketRow.study_id == study_id, TicketRow.state == "queued")
        .values(state="cancelled", finished_at=now)
    )


def note_study(session: Session, study_id: int, reason: str) -> None:
    """Record why a study ended the way it did (kept with its state)."""
    session.execute(update(StudyRow).where(StudyRow.id == study_id).values(reason=reason))
    session.commit()


def _maybe_done(session: Session, study_id: int) -> bool:
    """When every trial ticket is spent, queue the study's finalize ticket (retrain the best
    configuration, test it, store the model); when that is spent too, the study is done.
    Returns whether every trial ticket is spent."""

    def still_open(kind: str) -> bool:
        return bool(session.connection().scalar(_STILL_OPEN, {"study": study_id, "kind": kind}))

    if still_open("trial"):
        return False
    if still_open("finalize"):
        return True
    study = session.get(StudyRow, study_id, with_for_update=True)
    if study.state not in ACTIVE:
        return True
    has_final = session.scalar(
        select(func.count()).select_from(TicketRow).where(TicketRow.study_id == study_id, TicketRow.kind == "finalize")
    )
    if not has_final and results.n_complete(session, study.optuna_study_id) > 0:
        session.add(TicketRow(study_id=study_id, seq=study.n_trials, kind="finalize"))
        return True
    study.state, study.finished_at = "done", utcnow()
    return True


def _expire_timeouts(session: Session) -> None:
    """``budget.timeout_s`` after its start, a study starts no new trial; running ones finish,
    then it is finalized like any other."""
    now = utcnow()
    rows = session.execute(
        select(StudyRow.id, StudyRow.started_at, StudyRow.timeout_s).where(
            StudyRow.state == "running", StudyRow.timeout_s.is_not(None), StudyRow.reason.is_(None)
        )
    ).all()
    for study_id, started_at, timeout_s in rows:
        if started_at is not None and now >= started_at + timedelta(seconds=timeout_s):
            session.execute(
                update(TicketRow)
                .where(TicketRow.study_id == study_id, TicketRow.state == "queued", TicketRow.kind == "trial")
                .values(state="cancelled", finished_at=now)
            )
            session.execute(
                update(StudyRow).where(StudyRow.id == study_id).values(reason=f"budget.timeout_s={timeout_s:g} reached")
            )
            _maybe_done(session, study_id)


# --- tickets ---------------------------------------------------------------------------------


def _claimable_studies(session: Session, labels: set[str]) -> list[tuple[int, str, str]]:
    """(id, name, state) of the active studies with a queued ticket that this worker may run
    now (its labels, the study's ``max_parallel``), in claim order: priority, then age."""
    studies = [row for row in session.connection().execute(_CLAIMABLE) if set(row.labels or ()) <= labels]
    limited = sorted(row.id for row in studies if row.max_parallel is not None)
    running: dict[int, int] = {}
    if limited:
        # Serialise claims within capped studies (row locks, in id order), so that two workers
        # cannot both take the last free slot.
        session.execute(select(StudyRow.id).where(StudyRow.id.in_(limited)).order_by(StudyRow.id).with_for_update())
        running = dict(
            session.execute(
                select(TicketRow.study_id, func.count())
                .where(TicketRow.study_id.in_(limited), TicketRow.state == "leased")
                .group_by(TicketRow.study_id)
            ).all()
        )
    return [
        (row.id, row.name, row.state)
        for row in studies
        if row.max_parallel is None or running.get(row.id, 0) < row.max_parallel
    ]


def claim(
    session: Session,
    worker_id: str,
    *,
    labels: set[str],
    lease_s: float,
    housekeeping: bool = True,
    known_specs: Container[int] = (),
) -> Claim | None:
    """Lease the next queued ticket (priority, then age, then sequence) and commit at once.

    ``housekeeping`` first requeues expired leases and ends timed-out studies; a busy worker
    does it every few seconds rather than on every claim (leases last a minute or more).
    The claim's spec is left out (None) for the study ids in ``known_specs``: a study's spec
    never changes, and a worker keeps the ones it has."""
    if housekeeping:
        requeue_expired(session)
        _expire_timeouts(session)
    now = utcnow()
    conn = session.connection()
    for study_id, name, state in _claimable_studies(session, labels):
        row = conn.execute(
            _LEASE, {"study": study_id, "worker": worker_id, "expires": now + timedelta(seconds=lease_s), "now": now}
        ).first()
        if row is None:
            continue
        if state == "queued":
            conn.execute(_START_STUDY, {"study": study_id, "now": now})
        spec = None if study_id in known_specs else conn.scalar(_SPEC, {"study": study_id})
        session.commit()
        return Claim(row.id, row.seq, row.attempts, study_id, name, spec, row.kind)
    session.commit()
    return None


def renew(session: Session, ticket_id: int, worker_id: str, *, lease_s: float) -> str:
    """Extend a lease. Returns "ok", "lost" (the lease expired and the ticket was requeued), or
    the study's state when it is no longer active ("paused", "cancelled", "failed", "done"):
    anything but "ok" means the worker must stop that trial."""
    state = session.scalar(
        select(StudyRow.state).join(TicketRow, TicketRow.study_id == StudyRow.id).where(TicketRow.id == ticket_id)
    )
    result = session.execute(
        update(TicketRow)
        .where(TicketRow.id == ticket_id, TicketRow.worker_id == worker_id, TicketRow.state == "leased")
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    session.commit()
    if result.rowcount != 1:
        return "lost"
    return "ok" if state in ACTIVE else state


def holds(session: Session, ticket_id: int, worker_id: str) -> str:
    """Read-only ``renew``: "ok" while this worker holds the ticket of an active study."""
    row = session.execute(
        select(TicketRow.worker_id, TicketRow.state, StudyRow.state)
        .join(StudyRow, StudyRow.id == TicketRow.study_id)
        .where(TicketRow.id == ticket_id)
    ).first()
    if row is None or row[0] != worker_id or row[1] != "leased":
        return "lost"
    return "ok" if row[2] in ACTIVE else row[2]


def complete(session: Session, claim: Claim, worker_id: str, outcome: str, *, trial_number: int | None = None) -> bool:
    """The ticket's trial finished (COMPLETE or PRUNED): the ticket is spent. Returns whether
    that was the study's last open trial ticket."""
    _lock_study(session, claim.study_id)
    session.connection().execute(
        _DONE,
        {"ticket": claim.ticket_id, "worker": worker_id, "result": outcome, "number": trial_number, "now": utcnow()},
    )
    spent = _maybe_done(session, claim.study_id)
    session.commit()
    return spent


def release(session: Session, claim: Claim, worker_id: str, *, error: str | None, failed: bool) -> str | None:
    """Hand a ticket back to the queue (its trial failed, or the worker is shutting down).

    With ``failed`` the study's failure count rises; reaching ``max_failed_trials`` fails the
    study. Returns the study's new terminal state, if any."""
    study_state = session.scalar(select(StudyRow.state).where(StudyRow.id == claim.study_id).with_for_update())
    back = "queued" if study_state in (*ACTIVE, "paused") else "cancelled"  # an ended study takes nothing back
    session.execute(
        update(TicketRow)
        .where(TicketRow.id == claim.ticket_id, TicketRow.worker_id == worker_id, TicketRow.state == "leased")
        .values(state=back, worker_id=None, lease_expires_at=None, trial_number=None, last_error=error)
    )
    ended = None
    if failed:
        study = session.get(StudyRow, claim.study_id, with_for_update=True)
        study.n_failed += 1
        if study.n_failed >= study.max_failed and study.state in ACTIVE:
            finish_study(
                session,
                study.id,
                "failed",
                f"{study.n_failed} trials failed (max_failed_trials={study.max_failed}); last: {error}",
            )
            ended = "failed"
    session.commit()
    return ended


def drop(session: Session, claim: Claim, worker_id: str) -> None:
    """The study ended while this ticket ran (cancelled / failed): spend the ticket."""
    session.execute(
        update(TicketRow)
        .where(TicketRow.id == claim.ticket_id, TicketRow.worker_id == worker_id)
        .values(state="cancelled", lease_expires_at=None, finished_at=utcnow())
    )
    session.commit()


def _lock_study(session: Session, study_id: int) -> None:
    """Serialise the end-of-ticket bookkeeping of one study. Without it two workers finishing
    the last two tickets at once each see the other's ticket still open, and neither moves the
    study on (no finalize ticket, never done). Lock order everywhere: study row, then tickets."""
    session.connection().execute(_LOCK_STUDY, {"study": study_id})


def requeue_expired(session: Session) -> int:
    """Put back tickets whose lease ran out (their worker died or lost the database); those of
    studies that ended meanwhile are cancelled instead."""
    now = utcnow()
    expired = (TicketRow.state == "leased", TicketRow.lease_expires_at < now)
    ended = select(StudyRow.id).where(StudyRow.state.in_(("done", "cancelled", "failed")))
    session.execute(
        update(TicketRow)
        .where(*expired, TicketRow.study_id.in_(ended))
        .values(state="cancelled", lease_expires_at=None, finished_at=now)
    )
    result = session.execute(
        update(TicketRow)
        .where(*expired)
        .values(state="queued", worker_id=None, lease_expires_at=None, trial_number=None, last_error="lease expired")
    )
    return result.rowcount


def requeue_expired_now(session: Session) -> int:
    n = requeue_expired(session)
    session.commit()
    return n


# --- study control ---------------------------------------------------------------------------


class BadTransition(Exception):
    """A cancel / pause / resume that the study's state does not allow."""


def cancel_study(session: Session, study_id: int) -> None:
    """No new trial starts; running ones stop at their next epoch boundary."""
    state = session.scalar(select(StudyRow.state).where(StudyRow.id == study_id).with_for_update())
    if state not in (*ACTIVE, "paused"):
        raise BadTransition(f"cannot cancel a study that is {state}")
    finish_study(session, study_id, "cancelled", "cancelled by request")
    session.commit()


def pause_study(session: Session, study_id: int) -> None:
    """No new trial starts; running ones stop at their next epoch boundary and are re-queued
    with the same parameters for when the study resumes."""
    study = session.get(StudyRow, study_id, with_for_update=True)
    if study.state not in ACTIVE:
        raise BadTransition(f"cannot pause a study that is {study.state}")
    study.state = "paused"
    session.commit()


def resume_study(session: Session, study_id: int) -> None:
    study = session.get(StudyRow, study_id, with_for_update=True)
    if study.state != "paused":
        raise BadTransition(f"cannot resume a study that is {study.state}")
    study.state = "running" if study.started_at else "queued"
    _maybe_done(session, study_id)
    session.commit()


# --- workers ---------------------------------------------------------------------------------


WORKERS_KEPT_DAYS = 7  # a starting worker drops the rows of workers silent this long


def register_worker(session: Session, worker_id: str, *, device: str, labels: set[str], pid: int) -> None:
    cutoff = utcnow() - timedelta(days=WORKERS_KEPT_DAYS)
    session.execute(delete(WorkerRow).where(WorkerRow.last_heartbeat < cutoff))
    session.add(WorkerRow(id=worker_id, host=socket.gethostname(), pid=pid, device=device, labels=sorted(labels)))
    session.commit()


def worker_heartbeat(session: Session, worker_id: str, ticket_id: int | None, trial_number: int | None = None) -> None:
    """The worker is alive, and runs ``ticket_id`` (None: idle), Optuna trial ``trial_number``
    once the ticket has one. Written by the heartbeat thread, off the claim/complete path; the
    exact holder of a ticket is its ``worker_id``."""
    session.execute(
        update(WorkerRow)
        .where(WorkerRow.id == worker_id)
        .values(
            last_heartbeat=utcnow(),
            state="busy" if ticket_id is not None else "idle",
            ticket_id=ticket_id,
            trial_number=trial_number if ticket_id is not None else None,
        )
    )
    session.commit()


def deregister_worker(session: Session, worker_id: str) -> None:
    session.execute(
        update(WorkerRow)
        .where(WorkerRow.id == worker_id)
        .values(state="stopped", ticket_id=None, trial_number=None, last_heartbeat=utcnow())
    )
    session.commit()


def list_workers(session: Session, *, lost_after_s: float, include_stopped: bool = False) -> list[dict]:
    """Worker rows, newest first, each with the study of the ticket it runs (an idle or stopped
    worker's row holds no ticket). A worker that did not deregister and has not beaten for
    ``lost_after_s`` (its lease: by then its ticket is anyone's) is reported ``lost``, with the
    ticket it last held. A starting worker drops rows silent for a week."""
    now = utcnow()
    query = (
        select(WorkerRow, StudyRow.name)
        .outerjoin(TicketRow, TicketRow.id == WorkerRow.ticket_id)
        .outerjoin(StudyRow, StudyRow.id == TicketRow.study_id)
        .order_by(WorkerRow.started_at.desc(), WorkerRow.id)
    )
    if not include_stopped:
        query = query.where(WorkerRow.state != "stopped")
    out = []
    for row, study in session.execute(query).all():
        age = (now - row.last_heartbeat).total_seconds()
        state = "lost" if row.state != "stopped" and age > lost_after_s else row.state
        out.append(
            {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "device": row.device,
                "labels": list(row.labels or []),
                "state": state,
                "study": study,
                "ticket_id": row.ticket_id,
                "trial_number": row.trial_number,
                "started_at": row.started_at,
                "last_heartbeat": row.last_heartbeat,
                "heartbeat_age_s": round(age, 3),
            }
        )
    return out
