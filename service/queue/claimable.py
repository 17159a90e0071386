"""What a worker can claim, defined once as SQLAlchemy Core expressions.

:func:`queue.claim` runs them (:data:`CLAIMABLE`, :data:`LEASE`), and :mod:`queue.depth`
compiles :data:`BY_STUDY`, built from the same expressions, into the ``rnntune_queue_depth``
metric's query and the SQL text of KEDA's trigger (tests/deploy/test_queue_depth.py checks that
it counts exactly the tickets that real claims take):

- the study is ``queued`` or ``running`` (:func:`active`): not paused, done, cancelled or failed;
- the ticket is queued (:func:`waiting`); one held with its lease run out (:func:`expired`) is
  anyone's once the claim's housekeeping judged it (requeued, or done when its trial finished:
  the queue depth counts it all the same);
- a study past its ``deadline_at`` (``budget.timeout_s`` after its start) offers no trial
  ticket, only its reeval and finalize tickets (:func:`offered`);
- ``budget.max_parallel`` caps a study at that many leases held at once (:func:`held`; the
  queue depth counts the :func:`live` ones, the expired ones being claimable);
- a study runs only on a worker that carries all its labels and can run what its ``requires``
  names: the claim checks these in Python (``routing``), KEDA's query in PostgreSQL's jsonb.

Every time is the database's clock (:class:`db_now`)."""

from __future__ import annotations

from sqlalchemy import Boolean, ColumnElement, FromClause, and_, bindparam, case, func, or_, select, update

from rnntune.service.queue.common import _S, _T, ACTIVE, HELD, OPEN, db_now
from rnntune.service.store.tables import TicketKind, TicketState


def active(study: FromClause) -> ColumnElement[bool]:
    """A study whose tickets can be claimed."""
    return study.c.state.in_(ACTIVE)


def trials_open(study: FromClause) -> ColumnElement[bool]:
    """``budget.timeout_s``: before its deadline a study offers trial tickets."""
    return or_(study.c.deadline_at.is_(None), study.c.deadline_at > db_now())


def offered(ticket: FromClause, trials_open: ColumnElement[bool]) -> ColumnElement[bool]:
    """A ticket its study offers: reeval and finalize tickets always (the search is over, they
    make its result), trial tickets while ``trials_open``."""
    return or_(ticket.c.kind != TicketKind.TRIAL, trials_open)


def waiting(ticket: FromClause) -> ColumnElement[bool]:
    """A queued ticket: what a claim leases."""
    return ticket.c.state == TicketState.QUEUED


def held(ticket: FromClause) -> ColumnElement[bool]:
    """A ticket a worker holds: what ``budget.max_parallel`` caps."""
    return ticket.c.state.in_(HELD)


def expired(ticket: FromClause) -> ColumnElement[bool]:
    """A held ticket whose lease ran out: the lease sweep (``queue.lost``) judges it."""
    return and_(held(ticket), ticket.c.lease_expires_at < db_now())


def live(ticket: FromClause) -> ColumnElement[bool]:
    """A held ticket whose lease has not run out."""
    return and_(held(ticket), ticket.c.lease_expires_at >= db_now())


# The claim's first read: the active studies with a ticket they offer, in claim order (priority,
# then age). Labels, requires and max_parallel are checked on these rows (queue.tickets).
_TRIALS_OPEN = trials_open(_S)
CLAIMABLE = (
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
        active(_S),
        select(_T.c.id).where(_T.c.study_id == _S.c.id, waiting(_T), offered(_T, _TRIALS_OPEN)).exists(),
    )
    .order_by(_S.c.priority.desc(), _S.c.created_at, _S.c.id)
)


# A study's first offered ticket, through the partial index on queued tickets; one that another
# worker is claiming right now is skipped, not waited for.
_PICK = (
    select(_T.c.id)
    .where(
        _T.c.study_id == bindparam("study"),
        waiting(_T),
        offered(_T, bindparam("trials_open", type_=Boolean)),
    )
    .order_by(_T.c.seq)
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)


LEASE = (
    update(_T)
    .where(_T.c.id == _PICK, waiting(_T))
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


def _by_study():
    """One row per active study with open tickets: (study_id, study, labels, requires,
    n_claimable, n_held); ``n_held`` counts the leases alive now."""
    s, k, ks = _S.alias("s"), _T.alias("k"), _S.alias("ks")
    free = and_(or_(waiting(k), expired(k)), offered(k, trials_open(ks)))
    tickets = (
        select(
            k.c.study_id,
            func.sum(case((free, 1), else_=0)).label("n_free"),
            func.sum(case((live(k), 1), else_=0)).label("n_held"),
        )
        .select_from(k.join(ks, ks.c.id == k.c.study_id))
        .where(k.c.state.in_(OPEN))
        .group_by(k.c.study_id)
        .subquery("t")
    )
    room = s.c.max_parallel - tickets.c.n_held
    n_claimable = case(
        (or_(s.c.max_parallel.is_(None), tickets.c.n_free <= room), tickets.c.n_free),
        (room > 0, room),
        else_=0,
    )
    return (
        select(
            s.c.id.label("study_id"),
            s.c.name.label("study"),
            s.c.labels,
            s.c.requires,
            n_claimable.label("n_claimable"),
            tickets.c.n_held,
        )
        .select_from(s.join(tickets, tickets.c.study_id == s.c.id))
        .where(active(s))
    )


BY_STUDY = _by_study()
