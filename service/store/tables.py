"""Our own rows. Every table is prefixed ``rnntune_``: Optuna owns ``studies``, ``trials``, ...

- ``rnntune_studies``: the registry: name, the validated spec, state, scheduling fields.
- ``rnntune_tickets``: one row per trial slot of a study's budget; a worker leases one at a time.
- ``rnntune_workers``: one row per worker process, with its heartbeat, current ticket and trial.
- ``rnntune_datasets``: uploaded data files (bytes, sha256, what validation found in them).
- ``rnntune_models``: a finished study's models, one version per round (its budget, then each
  extension): the model file's bytes, config and metrics; the ``current`` one is the best.
- ``rnntune_evaluations``: re-evaluation runs of a study's best trials (``selection``), one per
  ``reeval`` ticket, plus each candidate's search trial as its own first value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class StudyState(StrEnum):
    """A study's state, as stored in ``rnntune_studies.state`` (docs/architecture.md, lifecycle)."""

    QUEUED = "queued"  # submitted, no ticket claimed yet
    RUNNING = "running"
    PAUSED = "paused"  # no new trial starts; interrupted ones wait with their parameters
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"  # max_failed_trials reached, or its data cannot be loaded

    @property
    def ended(self) -> bool:
        return self in ENDED


class TicketState(StrEnum):
    """A ticket's state, as stored in ``rnntune_tickets.state``::

    queued --claim--> leased --trial starts--> running --settle--> done / queued / cancelled
    """

    QUEUED = "queued"
    LEASED = "leased"  # claimed; its trial has not started yet
    RUNNING = "running"  # its Optuna trial started (``trial_id`` is set)
    DONE = "done"  # its trial finished (COMPLETE / PRUNED), its re-evaluation ended, or the finalize step ran
    CANCELLED = "cancelled"  # its study ended before the ticket was spent


class TicketKind(StrEnum):
    """What a ticket stands for, as stored in ``rnntune_tickets.kind``."""

    TRIAL = "trial"  # one trial of the search: the study's budget is ``n_trials`` of them
    REEVAL = "reeval"  # one training run of a candidate (selection): its row in rnntune_evaluations
    FINALIZE = "finalize"  # retrain the round's winner, test it, store the model


class WorkerState(StrEnum):
    """A worker's state, as stored in ``rnntune_workers.state`` (refreshed by its heartbeat)."""

    IDLE = "idle"
    BUSY = "busy"  # it runs ``ticket_id``
    STOPPED = "stopped"  # it deregistered
    LOST = "lost"  # never stored: what ``queue.list_workers`` reports for a worker silent past its lease


class LeaseState(StrEnum):
    """What ``queue.renew`` and ``queue.holds`` answer about a worker's ticket, unless its study is
    no longer active (then: the study's :class:`StudyState`). Never stored."""

    OK = "ok"  # the worker holds it, and its study is active
    LOST = "lost"  # no longer the worker's: its lease expired (the lease sweep judged it)


class EvaluationState(StrEnum):
    """A re-evaluation run's state, as stored in ``rnntune_evaluations.state``."""

    PENDING = "pending"  # its reeval ticket is not spent yet
    COMPLETE = "complete"
    FAILED = "failed"  # its last retry failed (``error``)


ENDED = (StudyState.DONE, StudyState.CANCELLED, StudyState.FAILED)
STUDY_STATES = tuple(s.value for s in StudyState)
TICKET_STATES = tuple(s.value for s in TicketState)


def utcnow() -> datetime:
    """Naive UTC, like Optuna's own timestamps (run every host in UTC or with NTP)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "rnntune_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    optuna_study_id: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.QUEUED)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    labels: Mapped[list] = mapped_column(JSON, default=list)
    n_trials: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int | None] = mapped_column(Integer, default=None)
    max_failed: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float | None] = mapped_column(Float, default=None)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)  # failed trials, counted toward max_failed
    # 0 for the submitted budget, + 1 for each extension (service/studies/ops.py): a round's trial,
    # reeval and finalize tickets carry it, and each round stores at most one model version
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # what a worker needs to run it: {"plugins": ["group:name", ...], "command": script} (routing.requirements)
    requires: Mapped[dict | None] = mapped_column(JSON, default=None)
    # the name of the token that created it (service/api/access.py); None: no name, or older than owners
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    # started_at + timeout_s, set (database time) when the study starts: no claim after it
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class TicketRow(Base):
    __tablename__ = "rnntune_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("rnntune_studies.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # 0 .. n_trials-1: seeds the sampler
    kind: Mapped[str] = mapped_column(String(16), default=TicketKind.TRIAL)
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # the study's round it belongs to
    state: Mapped[str] = mapped_column(String(16), default=TicketState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    # The Optuna trial this ticket runs, stored when it starts: settle and housekeeping read its
    # state, so a trial that finished is never run again under its ticket.
    trial_id: Mapped[int | None] = mapped_column(Integer, default=None)
    trial_number: Mapped[int | None] = mapped_column(Integer, default=None)
    # The parameters the ticket's next trial runs with (an initial trial, or the retry of one
    # that was interrupted or whose worker was lost), the trial they come from, and how many
    # times a worker was lost on them (the lease sweep caps it at max_retries).
    params: Mapped[dict | None] = mapped_column(JSON, default=None)
    retry_of: Mapped[int | None] = mapped_column(Integer, default=None)
    deaths: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)  # COMPLETE / PRUNED
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    __table_args__ = (
        # The claim query's scan: queued tickets in study order. Partial on Postgres and SQLite.
        Index(
            "ix_rnntune_tickets_queued",
            "study_id",
            "seq",
            postgresql_where=text(f"state = '{TicketState.QUEUED}'"),
            sqlite_where=text(f"state = '{TicketState.QUEUED}'"),
        ),
        Index("ix_rnntune_tickets_study_state", "study_id", "state"),
    )


class WorkerRow(Base):
    __tablename__ = "rnntune_workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    labels: Mapped[list] = mapped_column(JSON, default=list)
    # {"plugins": [{"group", "name", "distribution", "version"}, ...], "commands": bool}
    capabilities: Mapped[dict | None] = mapped_column(JSON, default=None)
    # WorkerState, the ticket it runs and that ticket's Optuna trial (once it has one):
    # refreshed by the worker's heartbeat (<= 5 s old)
    state: Mapped[str] = mapped_column(String(16), default=WorkerState.IDLE)
    ticket_id: Mapped[int | None] = mapped_column(Integer, default=None)
    trial_number: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DatasetRow(Base):
    """An uploaded CSV / .npz file. The bytes live in the database so that every worker (and
    every API replica) can read them without a shared filesystem."""

    __tablename__ = "rnntune_datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))  # csv / npz
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)  # bytes
    info: Mapped[dict] = mapped_column(JSON, default=dict)  # csv: rows, columns; npz: shapes, task
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # loaded only when asked
    owner: Mapped[str | None] = mapped_column(String(64), default=None)  # as StudyRow.owner
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ModelRow(Base):
    """One version of a study's result: the best configuration of a round retrained, tested
    once, saved as one model file. A study's first budget stores version 1; each extension's
    finalize stores the next, and ``is_current`` moves to it only when its metric is better."""

    __tablename__ = "rnntune_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("rnntune_studies.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer, default=1)  # 1, 2, ...: in the order they were stored
    round: Mapped[int] = mapped_column(Integer, default=0)  # the study's round that made it (a retry replaces it)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)  # what /best and /best/model serve
    metric: Mapped[float | None] = mapped_column(Float, default=None)  # what versions are compared on
    trial_number: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict] = mapped_column(JSON)  # the trial's searched parameters
    hyperparameters: Mapped[dict] = mapped_column(JSON)  # every hyperparameter, searched or not
    metrics: Mapped[dict] = mapped_column(JSON)  # {"trial_value", "val": {...}, "test": {...}}
    config: Mapped[dict] = mapped_column(JSON)  # {"model": ModelConfig, "train": TrainConfig}
    device: Mapped[str] = mapped_column(String(32))
    seconds: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # rnntune.models.save_model's file
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("study_id", "version", name="uq_rnntune_models_study_version"),
        UniqueConstraint("study_id", "round", name="uq_rnntune_models_study_round"),
    )


class EvaluationRow(Base):
    """One training run of a candidate (a complete trial among the study's ``selection.top_k``
    best) with a seed and on a fold: a ``reeval`` ticket's result, written by its settle in the
    transaction that spends the ticket (so it counts once). The candidate's search trial is a row
    too (no ticket: seed 0, the last fold, its own value)."""

    __tablename__ = "rnntune_evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("rnntune_studies.id", ondelete="CASCADE"))
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("rnntune_tickets.id", ondelete="CASCADE"), unique=True, default=None
    )  # None: the search trial's own run
    trial_id: Mapped[int] = mapped_column(Integer)  # the candidate's Optuna trial
    trial_number: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)  # 0: the search's best trial
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # the study's round that chose it
    seed_index: Mapped[int] = mapped_column(Integer)  # 0: the study's training seed, the trial's own
    fold: Mapped[int] = mapped_column(Integer)  # 0 .. folds-1; folds-1: the search's own split
    state: Mapped[str] = mapped_column(String(16), default=EvaluationState.PENDING)
    value: Mapped[float | None] = mapped_column(Float, default=None)  # the study's metric at the best epoch
    best_epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # errors and lost leases, toward max_retries
    error: Mapped[str | None] = mapped_column(Text, default=None)
    worker_id: Mapped[str | None] = mapped_column(String(64), default=None)  # who ran it to its end
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    __table_args__ = (Index("ix_rnntune_evaluations_study", "study_id"),)
