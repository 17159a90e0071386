"""The trial queue: every write to our ticket and worker tables lives here.

A study's budget is ``n_trials`` tickets. A worker claims one ticket (one short statement:
``FOR UPDATE SKIP LOCKED`` picks it, the same ``UPDATE`` leases it, committed before training),
records the Optuna trial it starts on the ticket, renews the lease while it trains, and hands
the run's :class:`~rnntune.service.outcome.TrialOutcome` to :func:`settle`, which applies the
whole end-of-ticket rule in one transaction. A ticket whose lease ran out goes back to the
queue unless its trial already finished; a failed trial hands its ticket back too, so a study
always ends with exactly ``n_trials`` finished trials (docs/architecture.md, "Ticket lifecycle").

Once the trial tickets are spent, a study with a ``selection`` gets one ``reeval`` ticket per
re-evaluation run of its best trials (:func:`settle_reeval` ends each), and then, or at once
without one, its ``finalize`` ticket (:func:`settle_finalize`).

Every time here (leases, heartbeats, timeouts, ``lost``) is the database's clock, never a
worker's: :func:`db_now`.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, and_, bindparam, case, delete, func, or_, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from rnntune.service import optuna_compat, plugins, results
from rnntune.service.outcome import Interruption, Outcome, TrialOutcome
from rnntune.service.spec import StudySpec, broken_reason, stored_spec_problem, try_stored_spec
from rnntune.service.tables import ENDED, EvaluationRow, StudyRow, StudyState, TicketRow, TicketState, WorkerRow

log = logging.getLogger("rnntune.queue")

ACTIVE = (StudyState.QUEUED, StudyState.RUNNING)
FINALIZE = "finalize"
REEVAL = "reeval"  # one training run of a candidate (selection): trial number, seed, fold in rnntune_evaluations
HELD = (TicketState.LEASED, TicketState.RUNNING)  # a worker has it
OPEN = (TicketState.QUEUED, *HELD)
WORKERS_KEPT_DAYS = 7  # a starting worker drops the rows of workers silent this long


class db_now(FunctionElement):
    """The database's current UTC time as a naive timestamp (like our columns), plus
    ``seconds`` (a number, a bind parameter or a column) when given. PostgreSQL: the
    transaction's ``now()``; SQLite: ``'now'`` to the microsecond's format."""

    type = DateTime()
    inherit_cache = True
    name = "db_now"


@compiles(db_now)
def _db_now_pg(element, compiler, **kw) -> str:
    now = "timezone('utc', now())"
    args = list(element.clauses)
    if not args:
        return now
    return f"({now} + make_interval(secs => {compiler.process(args[0], **kw)}))"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element, compiler, **kw) -> str:
    fmt = "'%Y-%m-%d %H:%M:%f'"
    args = list(element.clauses)
    if not args:
        return f"(strftime({fmt}, 'now') || '000')"
    return f"(strftime({fmt}, 'now', {compiler.process(args[0], **kw)} || ' seconds') || '000')"


# The per-trial path (claim, start, settle) runs prebuilt Core statements with bound parameters:
# building ORM expressions anew on every call cost more than the statements themselves.
_S, _T = StudyRow.__table__, TicketRow.__table__
_TRIALS = optuna_compat.trials_t
# budget.timeout_s, in the claim itself: past its deadline a study offers no trial ticket (its
# reeval and finalize tickets still run: the search is over, they make its result).
_TRIALS_OPEN = or_(_S.c.deadline_at.is_(None), _S.c.deadline_at > db_now())
_CLAIMABLE = (
    select(
        _S.c.id,
        _S.c.name,
        _S.c.state,
        _S.c.labels,
        _S.c.max_parallel,
        _S.c.requires,
        _S.c.created_at,
        _TRIALS_OPEN.label("trials_open"),
    )
    .where(
        _S.c.state.in_(ACTIVE),
        select(_T.c.id)
        .where(
            _T.c.study_id == _S.c.id,
            _T.c.state == TicketState.QUEUED,
            or_(_T.c.kind != "trial", _TRIALS_OPEN),
        )
        .exists(),
    )
    .order_by(_S.c.priority.desc(), _S.c.created_at, _S.c.id)
)
# A study's first queued ticket, through the partial index on queued tickets; one that another
# worker is claiming right now is skipped, not waited for.
_PICK = (
    select(_T.c.id)
    .where(
        _T.c.study_id == bindparam("study"),
        _T.c.state == TicketState.QUEUED,
        or_(_T.c.kind != "trial", bindparam("trials_open", type_=Boolean)),
    )
    .order_by(_T.c.seq)
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_LEASE = (
    update(_T)
    .where(_T.c.id == _PICK, _T.c.state == TicketState.QUEUED)
    .values(
        state=TicketState.LEASED,
        worker_id=bindparam("worker"),
        lease_expires_at=db_now(bindparam("lease_s")),
        attempts=_T.c.attempts + 1,
        started_at=db_now(),
    )
    .returning(
        _T.c.id,
        _T.c.seq,
        _T.c.attempts,
        _T.c.kind,
        _T.c.trial_id,
        _T.c.trial_number,
        _T.c.params,
        _T.c.retry_of,
        _T.c.deaths,
    )
)
_START_STUDY = (
    update(_S)
    .where(_S.c.id == bindparam("study"), _S.c.state == StudyState.QUEUED)
    .values(state=StudyState.RUNNING, started_at=db_now(), deadline_at=db_now(_S.c.timeout_s))
)
_SPEC = select(_S.c.spec).where(_S.c.id == bindparam("study"))
_MINE = (_T.c.id == bindparam("ticket"), _T.c.worker_id == bindparam("worker"), _T.c.state.in_(HELD))
_START_TRIAL = (
    update(_T)
    .where(*_MINE)
    .values(state=TicketState.RUNNING, trial_id=bindparam("trial_id"), trial_number=bindparam("number"))
)
_RENEW = update(_T).where(*_MINE).values(lease_expires_at=db_now(bindparam("lease_s")))
# settle, in one statement: the study row (locked: lock order everywhere is study row, then
# tickets; the expired-lease sweep takes it first too, so the ticket cannot change under us), the
# ticket if this worker still holds it, and the state of the Optuna trial it last recorded.
_SETTLE_READ = (
    select(
        _S.c.state,
        _S.c.n_failed,
        _S.c.max_failed,
        (_S.c.deadline_at <= db_now()).label("timed_out"),
        _T.c.id.label("ticket"),
        _T.c.trial_id,
        _TRIALS.c.state.label("trial_state"),
        _TRIALS.c.number,
    )
    .select_from(
        _S.outerjoin(_T, and_(_T.c.study_id == _S.c.id, *_MINE)).outerjoin(_TRIALS, _TRIALS.c.trial_id == _T.c.trial_id)
    )
    .where(_S.c.id == bindparam("study"))
    .with_for_update(of=_S)
)
_DONE = (
    update(_T)
    .where(*_MINE)
    .values(
        state=TicketState.DONE,
        outcome=bindparam("result"),
        trial_id=bindparam("trial_id"),
        trial_number=bindparam("number"),
        lease_expires_at=None,
        finished_at=db_now(),
    )
)
_BACK = (  # to the queue (a fresh trial, or the same parameters), or spent when the study ended
    update(_T)
    .where(*_MINE)
    .values(
        state=bindparam("state"),
        worker_id=None,
        lease_expires_at=None,
        trial_id=None,
        trial_number=None,
        params=bindparam("params", type_=JSON),
        retry_of=bindparam("retry_of"),
        deaths=bindparam("deaths"),
        last_error=bindparam("error"),
        finished_at=case((bindparam("state") == TicketState.CANCELLED, db_now()), else_=None),
    )
)
# The columns of a ticket that goes back for a fresh trial (no parameters of its own).
FRESH: dict[str, Any] = {"params": None, "retry_of": None, "deaths": 0}
_COUNT_FAILURE = update(_S).where(_S.c.id == bindparam("study")).values(n_failed=_S.c.n_failed + 1)
# EXISTS stops at the first open ticket (index on study, state) instead of counting them all.
_STILL_OPEN = select(
    select(_T.c.id)
    .where(_T.c.study_id == bindparam("study"), _T.c.state.in_(OPEN), _T.c.kind == bindparam("kind"))
    .exists()
)


class LifecycleError(RuntimeError):
    """A settle statement changed another number of rows than the lifecycle allows: the
    transaction is rolled back rather than committed half-applied."""


@dataclass(frozen=True)
class Claim:
    ticket_id: int
    seq: int
    attempts: int
    study_id: int
    study_name: str
    spec: dict[str, Any] | None  # None: the caller said it has it (``known_specs``)
    kind: str = "trial"  # "reeval": train a candidate again (rnntune_evaluations); "finalize": store the model
    # The Optuna trial an earlier holder of this ticket started and did not settle (its worker
    # died): the new holder looks at it before starting another.
    trial_id: int | None = None
    trial_number: int | None = None
    # The parameters this ticket's trial must run with (None: the sampler draws them), the
    # trial they come from, and how many times a worker was lost on them.
    params: dict[str, Any] | None = None
    retry_of: int | None = None
    deaths: int = 0
    created_at: Any = None  # the study row's: with its id, what tells a deleted study from a new one

    @property
    def study_key(self) -> tuple[int, Any]:
        """The study's identity for a worker's caches: SQLite gives a new study the id of a
        deleted one that was the newest (and Optuna's study id too), never its creation time."""
        return (self.study_id, self.created_at)

    def back(self, outcome: TrialOutcome) -> dict[str, Any]:
        """The parameter columns of this ticket going back to the queue after ``outcome``: an
        interruption keeps the parameters its trial ran (or, before it drew any, the ticket's
        own), anything else sends it back for a fresh trial."""
        if outcome.kind == Outcome.INTERRUPTED and outcome.interruption.retries_params:
            if outcome.params:
                return {"params": outcome.params, "retry_of": outcome.trial_number, "deaths": self.deaths}
            return {"params": self.params, "retry_of": self.retry_of, "deaths": self.deaths}
        return dict(FRESH)


@dataclass(frozen=True)
class Settled:
    """What :func:`settle` did. ``held`` False: the ticket was no longer this worker's (its
    lease expired, or an earlier attempt of this very settle committed and lost its
    acknowledgement), so nothing changed. ``spent``: no trial ticket of the study is open any
    more. ``study``: the study's state after the settle."""

    held: bool
    ticket: TicketState | None = None
    spent: bool = False
    study: StudyState | None = None


# --- studies ---------------------------------------------------------------------------------


def add_study(
    session: Session, *, spec: StudySpec, optuna_study_id: int, spec_hash: str, warm: list[dict[str, Any]] = ()
) -> StudyRow:
    """Register a study (its spec stored as JSON) and queue one ticket per trial of its budget,
    the first ones with the parameters of ``initial_trials``, then ``warm`` (a warm start's:
    service/warm_start.py) (caller commits)."""
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
        requires=plugins.requirements(spec),
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

    if still_open("trial"):
        return False
    if still_open(REEVAL) or still_open(FINALIZE):
        return True
    study = session.get(StudyRow, study_id, with_for_update=True, populate_existing=True)
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
        last = session.scalar(select(func.max(TicketRow.seq)).where(TicketRow.study_id == study_id))
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
    candidates = results.top_trials(session, study.optuna_study_id, spec.direction, sel.top_k)
    own = (0, sel.folds - 1)
    runs = [(s, f) for s in range(sel.seeds) for f in range(sel.folds) if (s, f) != own]
    last = session.scalar(select(func.max(TicketRow.seq)).where(TicketRow.study_id == study.id))
    for rank, trial in enumerate(candidates):
        session.add(
            EvaluationRow(
                study_id=study.id,
                round=study.round,
                trial_id=trial["trial_id"],
                trial_number=trial["number"],
                rank=rank,
                seed_index=own[0],
                fold=own[1],
                state="complete",
                value=trial["value"],
                best_epoch=trial["user_attrs"].get("best_epoch"),
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
            trial_id=trial["trial_id"],
            trial_number=trial["number"],
            rank=rank,
            seed_index=seed_index,
            fold=fold,
        )
        for ticket, rank, trial, seed_index, fold in tickets
    )
    session.flush()
    return len(tickets)


def _timeout_reason(timeout_s: float) -> str:
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
            .where(TicketRow.study_id == StudyRow.id, TicketRow.state == TicketState.QUEUED, TicketRow.kind == "trial")
            .exists(),
        )
    ).all()
    for study_id, timeout_s in rows:
        _lock_study(session, study_id)
        _cancel_queued_trials(session, study_id, timeout_s)
        _maybe_done(session, study_id)


def _cancel_queued_trials(session: Session, study_id: int, timeout_s: float) -> None:
    session.execute(
        update(TicketRow)
        .where(TicketRow.study_id == study_id, TicketRow.state == TicketState.QUEUED, TicketRow.kind == "trial")
        .values(state=TicketState.CANCELLED, finished_at=db_now())
    )
    session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id, StudyRow.reason.is_(None))
        .values(reason=_timeout_reason(timeout_s))
    )


# --- tickets ---------------------------------------------------------------------------------


def _claimable_studies(
    session: Session, labels: set[str], can_run: Callable[[dict], bool] | None = None
) -> list[tuple[int, str, str, bool, Any]]:
    """(id, name, state, trials_open, created_at) of the active studies with a queued ticket that this
    worker may run now (its labels, the study's ``max_parallel``, its deadline), in claim order:
    priority, then age. ``trials_open`` False: past its deadline, only its finalize ticket."""
    # ``can_run(requires)``: whether this worker has the plugins / command directory a study needs
    studies = [
        row
        for row in session.connection().execute(_CLAIMABLE)
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
    known_specs: Container[int] = (),
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
        row = conn.execute(_LEASE, lease).first()
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
    with session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(_START_TRIAL, params).rowcount == 1


def _held(session: Session, claim: Claim, worker_id: str):
    """A settle's first read: the connection, the bind parameters naming this worker's ticket,
    and the study's row, locked (None: the study was deleted), whose ``ticket`` is None
    unless this worker still holds the claim's ticket."""
    conn = session.connection()
    mine = {"ticket": claim.ticket_id, "worker": worker_id}
    return conn, mine, conn.execute(_SETTLE_READ, {"study": claim.study_id, **mine}).first()


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
        _expect(
            conn.execute(
                _DONE,
                {
                    **mine,
                    "result": outcome.optuna_state,
                    "trial_id": outcome.trial_id,
                    "number": outcome.trial_number,
                },
            ),
            "ticket done",
        )
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

    ended = state in ENDED or (outcome.kind == Outcome.INTERRUPTED and outcome.interruption == Interruption.CANCELLED)
    timed_out = bool(study.timed_out) and claim.kind == "trial"
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
    row = EvaluationRow.__table__
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
            .where(row.c.ticket_id == claim.ticket_id, row.c.state == "pending")
            .values(
                state="complete" if done else "failed",
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


def _study_state(session: Session, study_id: int) -> StudyState | None:
    state = session.scalar(select(StudyRow.state).where(StudyRow.id == study_id))
    return None if state is None else StudyState(state)


def _expect(result, what: str, n: int = 1) -> None:
    if result.rowcount != n:
        raise LifecycleError(f"settle: {what}: {result.rowcount} rows changed, expected {n}")


def renew(session: Session, ticket_id: int, worker_id: str, *, lease_s: float) -> str:
    """Extend a lease. Returns "ok", "lost" (the lease expired and the ticket was requeued), or
    the study's state when it is no longer active ("paused", "cancelled", "failed", "done"):
    anything but "ok" means the worker must stop that trial."""
    state = session.scalar(
        select(StudyRow.state).join(TicketRow, TicketRow.study_id == StudyRow.id).where(TicketRow.id == ticket_id)
    )
    result = session.connection().execute(_RENEW, {"ticket": ticket_id, "worker": worker_id, "lease_s": lease_s})
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
    if row is None or row[0] != worker_id or row[1] not in HELD:
        return "lost"
    return "ok" if row[2] in ACTIVE else row[2]


def _lock_study(session: Session, study_id: int) -> None:
    """Serialise the end-of-ticket bookkeeping of one study. Without it two workers finishing
    the last two tickets at once each see the other's ticket still open, and neither moves the
    study on (no finalize ticket, never done). Lock order everywhere: study row, then tickets."""
    session.execute(select(StudyRow.id).where(StudyRow.id == study_id).with_for_update())


_EXPIRED = (_T.c.state.in_(HELD), _T.c.lease_expires_at < db_now())
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
        return Verdict(TicketState.CANCELLED, fail_trial={"interrupted": _LOST_WORKER} if running else None)
    attrs = trial.user_attrs
    if "fail_reason" in attrs:
        return Verdict(
            TicketState.QUEUED, fail_trial={} if running else None, counted=attrs.get("error") or attrs["fail_reason"]
        )
    retry = {"params": trial.params or ticket.params, "retry_of": trial.number if trial.params else ticket.retry_of}
    if not running:
        if "interrupted" in attrs:
            return Verdict(TicketState.QUEUED, columns={**retry, "deaths": ticket.deaths})
        return Verdict(TicketState.QUEUED, counted="the trial failed and its worker was lost before settling it")
    deaths = ticket.deaths + 1
    if deaths > max_retries:
        reason = f"worker lost {deaths} times on this trial; last: lease expired"
        return Verdict(TicketState.QUEUED, fail_trial={"fail_reason": "worker lost", "error": reason}, counted=reason)
    return Verdict(TicketState.QUEUED, fail_trial={"interrupted": _LOST_WORKER}, columns={**retry, "deaths": deaths})


def requeue_expired(session: Session, *, max_retries: int = 2) -> int:
    """Judge the tickets whose lease ran out (their worker died, or lost the database for a lease
    period): each study's under its row lock, each ticket with its Optuna trial in the same
    transaction (:func:`judge`). This is the only place a lost worker's trial changes state: no
    Optuna heartbeat runs. Reeval and finalize tickets go back to the queue (a reeval counts a
    failure toward ``max_retries``). Returns how many tickets went back to the queue."""
    conn = session.connection()
    n_back = 0
    for study_id in conn.scalars(select(_T.c.study_id).where(*_EXPIRED).distinct()).all():
        _lock_study(session, study_id)  # lock order: study row, then tickets
        # read again under the lock: another sweeper may have judged them meanwhile
        tickets = conn.execute(select(_T).where(_T.c.study_id == study_id, *_EXPIRED).order_by(_T.c.id)).all()
        if not tickets:
            continue
        study = conn.execute(select(_S.c.state, _S.c.n_failed, _S.c.max_failed).where(_S.c.id == study_id)).one()
        trials = optuna_compat.trial_facts(conn, [t.trial_id for t in tickets if t.trial_id is not None])
        for ticket in tickets:
            if ticket.kind != "trial":
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
    mine = (_T.c.id == ticket.id, *_EXPIRED)
    if verdict.ticket == TicketState.DONE:
        done = {
            "state": TicketState.DONE,
            "outcome": verdict.outcome,
            "lease_expires_at": None,
            "finished_at": db_now(),
        }
        _expect(conn.execute(update(_T).where(*mine).values(**done)), "lost ticket done")
        return 0
    back = {
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
    mine = (_T.c.id == ticket.id, *_EXPIRED)
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


# --- study control ---------------------------------------------------------------------------


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
    study = session.get(StudyRow, study_id, with_for_update=True)
    if study.state not in ACTIVE:
        raise BadTransition(f"cannot pause a study that is {study.state}")
    study.state = StudyState.PAUSED
    session.commit()


def resume_study(session: Session, study_id: int) -> None:
    study = session.get(StudyRow, study_id, with_for_update=True)
    if study.state != StudyState.PAUSED:
        raise BadTransition(f"cannot resume a study that is {study.state}")
    study.state = StudyState.RUNNING if study.started_at else StudyState.QUEUED
    session.flush()
    _maybe_done(session, study_id)
    session.commit()


# --- workers ---------------------------------------------------------------------------------


def register_worker(
    session: Session, worker_id: str, *, device: str, labels: set[str], pid: int, capabilities: dict | None = None
) -> None:
    """``capabilities``: the plugins installed where the worker runs and whether it runs
    command trials (``plugins.capabilities``)."""
    session.execute(delete(WorkerRow).where(WorkerRow.last_heartbeat < db_now(-WORKERS_KEPT_DAYS * 86400.0)))
    session.add(
        WorkerRow(
            id=worker_id,
            host=socket.gethostname(),
            pid=pid,
            device=device,
            labels=sorted(labels),
            capabilities=capabilities,
            started_at=db_now(),
            last_heartbeat=db_now(),
        )
    )
    session.commit()


def worker_heartbeat(session: Session, worker_id: str, ticket_id: int | None, trial_number: int | None = None) -> None:
    """The worker is alive, and runs ``ticket_id`` (None: idle), Optuna trial ``trial_number``
    once the ticket has one. Written by the heartbeat thread, off the claim/settle path; the
    exact holder of a ticket is its ``worker_id``."""
    session.execute(
        update(WorkerRow)
        .where(WorkerRow.id == worker_id)
        .values(
            last_heartbeat=db_now(),
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
        .values(state="stopped", ticket_id=None, trial_number=None, last_heartbeat=db_now())
    )
    session.commit()


def list_workers(session: Session, *, lost_after_s: float, include_stopped: bool = False) -> list[dict]:
    """Worker rows, newest first, each with the study of the ticket it runs (an idle or stopped
    worker's row holds no ticket). A worker that did not deregister and has not beaten for
    ``lost_after_s`` (its lease: by then its ticket is anyone's) is reported ``lost``, with the
    ticket it last held; ages are measured on the database's clock. A starting worker drops rows
    silent for a week."""
    now = session.scalar(select(db_now()))
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
                "plugins": list((row.capabilities or {}).get("plugins", [])),
                "commands": bool((row.capabilities or {}).get("commands")),
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


def live_capabilities(session: Session, *, lost_after_s: float) -> list[dict]:
    """The capabilities of every live worker (not stopped, beaten within ``lost_after_s``)."""
    rows = session.scalars(
        select(WorkerRow.capabilities).where(
            WorkerRow.state != "stopped", WorkerRow.last_heartbeat >= db_now(-lost_after_s)
        )
    )
    return [caps or {} for caps in rows]


def unrunnable_reason(requires: dict | None, live: list[dict]) -> str | None:
    """Why no live worker can run a study with these requirements (None: some worker can)."""
    if not requires:
        return None
    lacking = [plugins.missing(requires, caps) for caps in live]
    if any(not m for m in lacking):
        return None
    needs = sorted({m for ms in lacking for m in ms}) if lacking else plugins.missing(requires, {})
    return f"waiting: no live worker can run it (needs {', '.join(needs)})"
