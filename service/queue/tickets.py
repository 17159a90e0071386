"""Trial tickets: claim (one ``FOR UPDATE SKIP LOCKED`` statement), start, renew, settle."""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row, func, select, update
from sqlalchemy.orm import Session

from rnntune.service.queue.claimable import CLAIMABLE, LEASE
from rnntune.service.queue.common import (
    _BACK,
    _COUNT_FAILURE,
    _DONE,
    _RENEW,
    _SETTLE_READ,
    _SPEC,
    _START_STUDY,
    _START_TRIAL,
    ACTIVE,
    FINALIZE,
    FRESH,
    HELD,
    REEVAL,
    Claim,
    Settled,
    _expect,
    _study_state,
    db_now,
)
from rnntune.service.queue.lost import requeue_expired
from rnntune.service.queue.studies import (
    _cancel_queued_trials,
    _count_failure,
    _expire_timeouts,
    _maybe_done,
    finish_study,
)
from rnntune.service.spec import stored_spec_problem
from rnntune.service.store.tables import ENDED, LeaseState, StudyRow, StudyState, TicketKind, TicketRow, TicketState
from rnntune.service.trials.outcome import Interruption, Outcome, TrialOutcome

log = logging.getLogger("rnntune.queue")


def _claimable_studies(
    session: Session, labels: set[str], can_run: Callable[[dict], bool] | None = None
) -> list[tuple[int, str, str, bool, Any]]:
    """(id, name, state, trials_open, created_at) of the active studies with a queued ticket that this
    worker may run now (its labels, the study's ``max_parallel``, its deadline), in claim order:
    priority, then age. ``trials_open`` False: past its deadline, only its finalize ticket."""
    # ``can_run(requires)``: whether this worker has the plugins / command directory a study needs
    studies = [
        row
        for row in session.connection().execute(CLAIMABLE)
        if set(row.labels or ()) <= labels and (not row.requires or (can_run is not None and can_run(row.requires)))
    ]
    limited = sorted(row.id for row in studies if row.max_parallel is not None)
    running: dict[int, int] = {}
    if limited:
        # Serialise claims within capped studies (row locks, in id order), so that two workers
        # cannot both take the last free slot.
        session.execute(select(StudyRow.id).where(StudyRow.id.in_(limited)).order_by(StudyRow.id).with_for_update())
        running = dict(
            session.execute(
                select(TicketRow.study_id, func.count())
                .where(TicketRow.study_id.in_(limited), TicketRow.state.in_(HELD))
                .group_by(TicketRow.study_id)
            ).all()
        )
    return [
        (row.id, row.name, row.state, bool(row.trials_open), row.created_at)
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
    known_specs: Container[tuple[int, Any]] = (),
    can_run: Callable[[dict], bool] | None = None,
    max_retries: int = 2,
) -> Claim | None:
    """Lease the next queued ticket (priority, then age, then sequence) and commit at once.

    ``housekeeping`` first settles expired leases and ends timed-out studies; a busy worker
    does it every few seconds rather than on every claim (leases last a minute or more).
    The claim's spec is left out (None) for the studies whose :attr:`Claim.study_key` is in
    ``known_specs``: a study's spec never changes, and a worker keeps the ones it has."""
    if housekeeping:
        requeue_expired(session, max_retries=max_retries)
        _expire_timeouts(session)
    conn = session.connection()
    for study_id, name, state, trials_open, created_at in _claimable_studies(session, labels, can_run):
        lease = {"study": study_id, "worker": worker_id, "lease_s": lease_s, "trials_open": trials_open}
        row = conn.execute(LEASE, lease).first()
        if row is None:
            continue
        spec = None if (study_id, created_at) in known_specs else conn.scalar(_SPEC, {"study": study_id})
        broken = None if spec is None else stored_spec_problem(spec)
        if broken is not None:  # never handed to a worker: the study fails, saying why
            _fail_broken(session, study_id, row.id, broken)
            conn = session.connection()  # (the commit ended the last one)
            continue
        if state == StudyState.QUEUED:
            conn.execute(_START_STUDY, {"study": study_id})
        session.commit()
        return Claim(
            row.id,
            row.seq,
            row.attempts,
            study_id,
            name,
            spec,
            row.kind,
            row.trial_id,
            row.trial_number,
            row.params or None,
            row.retry_of,
            row.deaths or 0,
            created_at,
        )
    session.commit()
    return None


def _fail_broken(session: Session, study_id: int, ticket_id: int, reason: str) -> None:
    """A claimed study whose stored spec no longer parses: fail it with the reason and cancel the
    ticket just leased, in the claim's transaction, so that no worker runs (or retries) it."""
    finish_study(session, study_id, StudyState.FAILED, reason)
    session.execute(
        update(TicketRow)
        .where(TicketRow.id == ticket_id)
        .values(state=TicketState.CANCELLED, worker_id=None, lease_expires_at=None, finished_at=db_now())
    )
    session.commit()
    log.error("study %d failed: %s", study_id, reason)


def start_trial(session: Session, claim: Claim, worker_id: str, *, trial_id: int, trial_number: int) -> bool:
    """The ticket's Optuna trial started: record it on the ticket (now ``running``) before any
    training, so that whoever looks at the ticket later can ask Optuna how that trial ended.
    Returns False when the ticket is no longer this worker's: the trial must not run."""
    params = {"ticket": claim.ticket_id, "worker": worker_id, "trial_id": trial_id, "number": trial_number}
    # One statement, autocommitted: no BEGIN / COMMIT round trips on the per-trial path.
    engine = cast(Engine, session.get_bind())  # the worker binds its sessions to an engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(_START_TRIAL, params).rowcount == 1


def _held(session: Session, claim: Claim, worker_id: str):
    """A settle's first read: the connection, the bind parameters naming this worker's ticket,
    and the study's row, locked (None: the study was deleted), whose ``ticket`` is None
    unless this worker still holds the claim's ticket."""
    conn = session.connection()
    mine = {"ticket": claim.ticket_id, "worker": worker_id}
    return conn, mine, conn.execute(_SETTLE_READ, {"study": claim.study_id, **mine}).first()


def settle(session: Session, claim: Claim, worker_id: str, outcome: TrialOutcome) -> Settled:
    """Apply the end-of-ticket rule for ``outcome`` in one transaction and commit it.

    - The study row is locked, then the ticket, which must still be this worker's; if it is
      not, nothing changes (``held`` False): so a settle retried after its commit's
      acknowledgement was lost changes nothing twice, and ``n_failed`` rises once.
    - The ticket's recorded Optuna trial is consulted: a COMPLETE or PRUNED trial spends the
      ticket whatever the outcome says (e.g. ``tell`` committed, then its acknowledgement was
      lost and the worker saw an error).
    - complete / pruned: ticket done; the last trial ticket queues the finalize ticket.
    - failed / diverged: ticket queued for a fresh trial; ``n_failed`` + 1, and reaching
      ``max_failed_trials`` fails the study with the failure's reason.
    - interrupted: paused / stopped / storage -> queued with the trial's parameters on the
      ticket (its next trial runs them again); cancelled -> ticket cancelled; lost -> normally
      no longer held (nothing changes: the lease sweep judged it); if held after all, queued
      like an interruption by storage.
    - data error: a counted failure that fails the study at once, with its reason; the
      ticket is cancelled.
    - A ticket going back to the queue of a study that ended, or is past its ``timeout_s``, is
      cancelled instead. Every statement's row count is checked."""
    conn, mine, study = _held(session, claim, worker_id)
    if study is None or study.ticket is None:  # the study was deleted, or the ticket is not ours
        session.rollback()
        return Settled(held=False, study=None if study is None else StudyState(study.state))
    state = StudyState(study.state)
    trial_state = study.trial_state.name if study.trial_state is not None else None
    if trial_state in ("COMPLETE", "PRUNED"):  # finished in Optuna: the ticket is spent, whatever we saw
        outcome = TrialOutcome(Outcome(trial_state.lower()), study.trial_id, study.number)

    if outcome.finished:
        done = {**mine, "result": outcome.optuna_state, "trial_id": outcome.trial_id, "number": outcome.trial_number}
        _expect(conn.execute(_DONE, done), "ticket done")
        spent = _maybe_done(session, claim.study_id)
        session.commit()
        return Settled(True, TicketState.DONE, spent, _study_state(session, claim.study_id) if spent else state)

    if outcome.kind == Outcome.DATA_ERROR:
        _expect(conn.execute(_COUNT_FAILURE, {"study": claim.study_id}), "failure count")  # and fail it at once
        finish_study(session, claim.study_id, StudyState.FAILED, outcome.reason)
        cancel = {**mine, **FRESH, "state": TicketState.CANCELLED, "error": outcome.reason}
        _expect(conn.execute(_BACK, cancel), "ticket")
        session.commit()
        return Settled(True, TicketState.CANCELLED, False, StudyState.FAILED)
    return _settle_back(session, conn, mine, claim, study, outcome)


def _settle_back(
    session: Session, conn: Connection, mine: dict[str, Any], claim: Claim, study: Row, outcome: TrialOutcome
) -> Settled:
    """settle of an outcome that sends the ticket back: queued, or cancelled when its study
    ended or (a trial ticket) is past its ``timeout_s``; a counted failure may fail the study."""
    state = StudyState(study.state)
    ended = state in ENDED or (outcome.kind == Outcome.INTERRUPTED and outcome.interruption == Interruption.CANCELLED)
    timed_out = bool(study.timed_out) and claim.kind == TicketKind.TRIAL
    back = TicketState.CANCELLED if ended or timed_out else TicketState.QUEUED
    _expect(conn.execute(_BACK, {**mine, **claim.back(outcome), "state": back, "error": outcome.reason}), "ticket back")
    if outcome.counts_as_failure and _count_failure(session, claim.study_id, study, outcome.reason):
        session.commit()
        return Settled(True, TicketState.CANCELLED, False, StudyState.FAILED)
    spent = False
    if back == TicketState.CANCELLED and state not in ENDED:
        if timed_out:
            timeout_s = session.scalar(select(StudyRow.timeout_s).where(StudyRow.id == claim.study_id))
            _cancel_queued_trials(session, claim.study_id, timeout_s)
        spent = _maybe_done(session, claim.study_id)
    session.commit()
    return Settled(True, back, spent, _study_state(session, claim.study_id))


def finalizing(session: Session, study_ids: list[int]) -> set[int]:
    """Of these running studies, those whose trials are all spent and whose result is being made
    (a reeval or finalize ticket exists and is not done): the API shows them as ``finalizing``."""
    if not study_ids:
        return set()
    q = (
        select(TicketRow.study_id)
        .join(StudyRow, StudyRow.id == TicketRow.study_id)
        .where(
            TicketRow.study_id.in_(study_ids),
            TicketRow.round == StudyRow.round,  # an extended study's earlier results are made
            TicketRow.kind.in_((REEVAL, FINALIZE)),
            TicketRow.state != TicketState.DONE,
        )
    )
    return set(session.scalars(q))


def renew(session: Session, ticket_id: int, worker_id: str, *, lease_s: float) -> LeaseState | StudyState:
    """Extend a lease. Returns OK, LOST (the lease expired and the ticket was requeued), or the
    study's state when it is no longer active (paused, cancelled, failed, done): anything but OK
    means the worker must stop that trial."""
    state = session.scalar(
        select(StudyRow.state).join(TicketRow, TicketRow.study_id == StudyRow.id).where(TicketRow.id == ticket_id)
    )
    result = session.connection().execute(_RENEW, {"ticket": ticket_id, "worker": worker_id, "lease_s": lease_s})
    session.commit()
    if result.rowcount != 1 or state is None:
        return LeaseState.LOST
    return LeaseState.OK if state in ACTIVE else StudyState(state)


def holds(session: Session, ticket_id: int, worker_id: str) -> LeaseState | StudyState:
    """Read-only ``renew``: OK while this worker holds the ticket of an active study."""
    row = session.execute(
        select(TicketRow.worker_id, TicketRow.state, StudyRow.state)
        .join(StudyRow, StudyRow.id == TicketRow.study_id)
        .where(TicketRow.id == ticket_id)
    ).first()
    if row is None or row[0] != worker_id or row[1] not in HELD:
        return LeaseState.LOST
    return LeaseState.OK if row[2] in ACTIVE else StudyState(row[2])
