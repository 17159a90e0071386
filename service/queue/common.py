"""What every part of the queue shares: the database's clock (:func:`db_now`), the groups of
states, the statements that start, renew and settle a ticket, and the ``Claim`` / ``Settled`` a
worker holds (the claim's own conditions and statements: ``queue.claimable``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import JSON, DateTime, Table, and_, bindparam, case, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from rnntune.service.store import optuna_compat
from rnntune.service.store.tables import StudyRow, StudyState, TicketKind, TicketRow, TicketState
from rnntune.service.trials.outcome import Outcome, TrialOutcome

log = logging.getLogger("rnntune.queue")


ACTIVE = (StudyState.QUEUED, StudyState.RUNNING)


FINALIZE = TicketKind.FINALIZE


REEVAL = TicketKind.REEVAL


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
_S, _T = cast(Table, StudyRow.__table__), cast(Table, TicketRow.__table__)


_TRIALS = optuna_compat.trials_t


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
    kind: str = TicketKind.TRIAL  # REEVAL: train a candidate again (rnntune_evaluations); FINALIZE: store the model
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
        why = outcome.interruption
        if outcome.kind == Outcome.INTERRUPTED and why is not None and why.retries_params:
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


def _study_state(session: Session, study_id: int) -> StudyState | None:
    state = session.scalar(select(StudyRow.state).where(StudyRow.id == study_id))
    return None if state is None else StudyState(state)


def _expect(result, what: str, n: int = 1) -> None:
    if result.rowcount != n:
        raise LifecycleError(f"settle: {what}: {result.rowcount} rows changed, expected {n}")


def _lock_study(session: Session, study_id: int) -> None:
    """Serialise the end-of-ticket bookkeeping of one study. Without it two workers finishing
    the last two tickets at once each see the other's ticket still open, and neither moves the
    study on (no finalize ticket, never done). Lock order everywhere: study row, then tickets."""
    session.execute(select(StudyRow.id).where(StudyRow.id == study_id).with_for_update())
