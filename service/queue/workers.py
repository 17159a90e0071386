"""The worker registry: register, heartbeat, deregister, list; what live workers can run."""

from __future__ import annotations

import logging
import socket

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from rnntune.service import routing
from rnntune.service.queue.common import WORKERS_KEPT_DAYS, db_now
from rnntune.service.store.tables import StudyRow, TicketRow, WorkerRow, WorkerState

log = logging.getLogger("rnntune.queue")


def register_worker(
    session: Session, worker_id: str, *, device: str, labels: set[str], pid: int, capabilities: dict | None = None
) -> None:
    """``capabilities``: the plugins installed where the worker runs and whether it runs
    command trials (``routing.capabilities``)."""
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
            state=WorkerState.BUSY if ticket_id is not None else WorkerState.IDLE,
            ticket_id=ticket_id,
            trial_number=trial_number if ticket_id is not None else None,
        )
    )
    session.commit()


def deregister_worker(session: Session, worker_id: str) -> None:
    session.execute(
        update(WorkerRow)
        .where(WorkerRow.id == worker_id)
        .values(state=WorkerState.STOPPED, ticket_id=None, trial_number=None, last_heartbeat=db_now())
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
        query = query.where(WorkerRow.state != WorkerState.STOPPED)
    out = []
    for row, study in session.execute(query).all():
        age = (now - row.last_heartbeat).total_seconds()
        state = WorkerState.LOST if row.state != WorkerState.STOPPED and age > lost_after_s else row.state
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
            WorkerRow.state != WorkerState.STOPPED, WorkerRow.last_heartbeat >= db_now(-lost_after_s)
        )
    )
    return [caps or {} for caps in rows]


def unrunnable_reason(requires: dict | None, live: list[dict]) -> str | None:
    """Why no live worker can run a study with these requirements (None: some worker can)."""
    if not requires:
        return None
    lacking = [routing.missing(requires, caps) for caps in live]
    if any(not m for m in lacking):
        return None
    needs = sorted({m for ms in lacking for m in ms}) if lacking else routing.missing(requires, {})
    return f"waiting: no live worker can run it (needs {', '.join(needs)})"
