"""What one ticket's run came to, by the ticket's kind, and the one place where it is settled.

A trial ticket's handler returns the trial's :class:`~rnntune.service.trials.outcome.TrialOutcome`
(settled by ``queue.settle``), a re-evaluation's a :class:`Reevaluated`
(``queue.settle_reeval``), the finalize step's a :class:`Finalized` (``queue.settle_finalize``);
a re-evaluation whose ticket became another worker's returns :class:`Lost`, and nothing is
settled (the lease sweep judged it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from rnntune.service import queue
from rnntune.service.trials.outcome import TrialOutcome


@dataclass(frozen=True)
class Reevaluated:
    """A re-evaluation run's end: its ``value`` (the run completed), or an ``error`` that is
    ``final`` (the run failed) or not (the ticket goes back to the queue; ``counts`` adds one to
    the run's failures: an error, not a pause or a shutdown)."""

    value: float | None = None
    best_epoch: int | None = None
    seconds: float | None = None
    error: str | None = None
    final: bool = False
    counts: bool = True
    note: str = ""  # what the worker logs of a completed run once it is settled


@dataclass(frozen=True)
class Finalized:
    """The finalize step's end: done (``error`` None), or an ``error`` that is ``final`` (the
    study ends done without a model, saying why) or not (the ticket goes back to the queue)."""

    error: str | None = None
    final: bool = True


@dataclass(frozen=True)
class Lost:
    """The ticket became another worker's while it ran: there is nothing to settle."""


Settleable = TrialOutcome | Reevaluated | Finalized
Result = Settleable | Lost


def settle_result(session: Session, claim: queue.Claim, worker_id: str, result: Settleable) -> queue.Settled:
    """Record ``result`` as its ticket's end, in one transaction."""
    if isinstance(result, TrialOutcome):
        return queue.settle(session, claim, worker_id, result)
    if isinstance(result, Reevaluated):
        return queue.settle_reeval(
            session,
            claim,
            worker_id,
            value=result.value,
            error=result.error,
            final=result.final,
            counts=result.counts,
            best_epoch=result.best_epoch,
            seconds=result.seconds,
        )
    return queue.settle_finalize(session, claim, worker_id, error=result.error, final=result.final)


def broke_outside_training(result: Result) -> bool:
    """A counted failure of a trial that never ran (no trial id): the worker backs off."""
    return isinstance(result, TrialOutcome) and result.counts_as_failure and result.trial_id is None
