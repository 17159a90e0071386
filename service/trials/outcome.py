"""How one ticket's run ended: the value an objective hands to ``queue.settle``.

Torch-free, so that the queue (imported by the API) and any other kind of objective (a plugin,
a command run as a child process) map onto the same few outcomes. ``queue.settle`` turns each
into the ticket's next state (docs/architecture.md, "Ticket lifecycle")::

    COMPLETE / PRUNED          -> ticket done, never re-queued
    FAILED / DIVERGED          -> ticket queued for a fresh trial; counts toward max_failed_trials
    INTERRUPTED paused/stopped -> ticket queued; the same parameters run again
    INTERRUPTED storage        -> the same, not counted (the database failed under Optuna)
    INTERRUPTED cancelled      -> ticket cancelled (the study ended while it ran)
    INTERRUPTED lost           -> nothing: the lease expired and the ticket is another worker's
    DATA_ERROR                 -> the study fails at once (its data cannot be loaded)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"  # an error in training, in the sampler / pruner, or around the trial
    DIVERGED = "diverged"  # the metric became NaN or infinite
    INTERRUPTED = "interrupted"  # stopped at an epoch boundary; ``interruption`` says why
    DATA_ERROR = "data_error"  # the study's data cannot be loaded: every trial would fail


class Interruption(StrEnum):
    CANCELLED = "cancelled"  # the study was cancelled, or ended otherwise
    PAUSED = "paused"
    STOPPED = "stopped"  # the worker was asked to stop (SIGTERM / SIGINT / its supervisor)
    LOST = "lost"  # the lease expired (the worker lost the database for a lease period)
    STORAGE = "storage"  # the database failed under Optuna's own bookkeeping

    @property
    def describe(self) -> str:
        """What stopped the trial, as its ``interrupted`` attribute says it."""
        return _DESCRIBE[self]

    @property
    def retries_params(self) -> bool:
        """The trial's parameters run again under the re-queued ticket."""
        return self in (Interruption.PAUSED, Interruption.STOPPED, Interruption.STORAGE, Interruption.LOST)


_DESCRIBE = {
    Interruption.CANCELLED: "study cancelled",
    Interruption.PAUSED: "study paused",
    Interruption.STOPPED: "worker stopped",
    Interruption.LOST: "lease lost",
    Interruption.STORAGE: "storage failed",
}


@dataclass(frozen=True)
class TrialOutcome:
    """One ticket's end. ``trial_id`` / ``trial_number`` name the Optuna trial when one started;
    ``reason`` is what a failure records (in the ticket's ``last_error`` and, for the failure
    that ends a study, its ``reason``)."""

    kind: Outcome
    trial_id: int | None = None
    trial_number: int | None = None
    value: float | None = None
    reason: str | None = None
    interruption: Interruption | None = None
    params: dict[str, Any] | None = None

    @classmethod
    def complete(cls, trial_id: int, number: int, value: float) -> TrialOutcome:
        return cls(Outcome.COMPLETE, trial_id, number, value=value)

    @classmethod
    def pruned(cls, trial_id: int, number: int) -> TrialOutcome:
        return cls(Outcome.PRUNED, trial_id, number)

    @classmethod
    def failed(cls, reason: str, trial_id: int | None = None, number: int | None = None) -> TrialOutcome:
        return cls(Outcome.FAILED, trial_id, number, reason=reason)

    @classmethod
    def diverged(cls, reason: str, trial_id: int | None = None, number: int | None = None) -> TrialOutcome:
        return cls(Outcome.DIVERGED, trial_id, number, reason=reason)

    @classmethod
    def interrupted(
        cls,
        why: Interruption,
        trial_id: int | None = None,
        number: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> TrialOutcome:
        return cls(Outcome.INTERRUPTED, trial_id, number, reason=f"interrupted: {why}", interruption=why, params=params)

    @classmethod
    def data_error(cls, reason: str, trial_id: int | None = None, number: int | None = None) -> TrialOutcome:
        return cls(Outcome.DATA_ERROR, trial_id, number, reason=reason)

    @property
    def finished(self) -> bool:
        """The trial counts toward ``n_trials``: the ticket is spent."""
        return self.kind in (Outcome.COMPLETE, Outcome.PRUNED)

    @property
    def counts_as_failure(self) -> bool:
        return self.kind in (Outcome.FAILED, Outcome.DIVERGED)

    @property
    def optuna_state(self) -> str | None:
        """COMPLETE / PRUNED, as Optuna and ``rnntune_tickets.outcome`` spell it."""
        return self.kind.name if self.finished else None


class Interrupted(Exception):
    """Raised at an epoch boundary when the worker must stop (shutdown, cancel, lost lease)."""
