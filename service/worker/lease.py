"""The ticket a worker holds, shared by its loop and its heartbeat thread.

The heartbeat renews the ticket's lease from claim until its settle commits, shows the running
trial on the worker's row, and notices a cancelled or paused study or a lost lease: it then
records why and sets :attr:`Lease.interrupt`, which stops the trial at its next epoch boundary.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from rnntune.service import queue
from rnntune.service.store.db import TRANSIENT_ERRORS, in_session, retry_db
from rnntune.service.store.tables import LeaseState, StudyState
from rnntune.service.trials.outcome import Interruption

log = logging.getLogger("rnntune.worker")
# renew's answer -> why the running trial stops (a study that ended spends the ticket)
_STATUS_INTERRUPTION = {LeaseState.LOST: Interruption.LOST, StudyState.PAUSED: Interruption.PAUSED}


class Lease:
    """The held ticket (None: none), its Optuna trial once it has one, and why its trial must stop."""

    def __init__(self, worker_id: str, sessions: sessionmaker[Session], lease_s: float, stopping: threading.Event):
        self.worker_id = worker_id
        self.sessions = sessions
        self.lease_s = lease_s
        self.stopping = stopping  # shutdown asked: finish at the next epoch boundary
        self.interrupt = threading.Event()  # the running trial must stop (shutdown / cancel / lease lost)
        self._lock = threading.Lock()
        self._claim: queue.Claim | None = None
        self._trial_id: int | None = None
        self._trial_number: int | None = None  # the running ticket's Optuna trial, once it has one
        self._reason = Interruption.STOPPED
        self._beat_stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- the loop's side -----------------------------------------------------------------
    def hold(self, claim: queue.Claim | None) -> None:
        """The ticket this worker now runs (None: none). A new one starts uninterrupted unless
        the worker is shutting down."""
        with self._lock:
            self._claim = claim
            self._trial_id = self._trial_number = None
            if claim is not None and not self.stopping.is_set():
                self.interrupt.clear()
                self._reason = Interruption.STOPPED

    def settled(self) -> None:
        """The ticket's settle committed: the heartbeat stops renewing it."""
        with self._lock:
            self._claim = None

    def show(self, trial_id: int | None, number: int | None) -> None:
        """The held ticket's Optuna trial (the heartbeat shows its number on the worker's row)."""
        with self._lock:
            self._trial_id, self._trial_number = trial_id, number

    def trial_ids(self) -> tuple[int | None, int | None]:
        with self._lock:
            return self._trial_id, self._trial_number

    def lost(self) -> None:
        """The ticket turned out to be another worker's: its trial stops as ``lost``."""
        with self._lock:
            self._reason = Interruption.LOST

    def interruption(self) -> Interruption:
        """Why the running trial was told to stop."""
        with self._lock:
            return Interruption.STOPPED if self.stopping.is_set() else self._reason

    def check(self, claim: queue.Claim, *, renew: bool = True, retry: bool = True) -> bool:
        """Renew (or, read-only, check) the ticket's lease; when it is lost or the study stopped,
        record why and interrupt the trial."""
        check: Callable[[Session], str]
        if renew:
            check = lambda s: queue.renew(s, claim.ticket_id, self.worker_id, lease_s=self.lease_s)  # noqa: E731
        else:
            check = lambda s: queue.holds(s, claim.ticket_id, self.worker_id)  # noqa: E731
        if retry:
            status = retry_db(in_session, self.sessions, check, log=log, who=f"worker {self.worker_id}")
        else:
            status = in_session(self.sessions, check)
        if status != LeaseState.OK:
            with self._lock:  # (a claim that was settled meanwhile is no longer held)
                if self._claim is claim and not self.interrupt.is_set():
                    log.info("worker %s: ticket %d: %s; stopping its trial", self.worker_id, claim.ticket_id, status)
                    self._reason = _STATUS_INTERRUPTION.get(status, Interruption.CANCELLED)
                    self.interrupt.set()
        return status == LeaseState.OK

    # --- the heartbeat thread: lease renewal, worker heartbeat, cancel detection ---------
    def start_heartbeat(self) -> None:
        self._beat = threading.Thread(target=self._heartbeat_loop, name="rnntune-heartbeat", daemon=True)
        self._beat.start()

    def stop_heartbeat(self) -> None:
        self._beat_stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)

    def _heartbeat_loop(self) -> None:
        period = min(self.lease_s / 4, 5.0)
        while not self._beat_stop.wait(period):
            with self._lock:
                claim, trial_number = self._claim, self._trial_number
            try:
                with self.sessions() as s:
                    ticket_id = claim.ticket_id if claim is not None else None
                    queue.worker_heartbeat(s, self.worker_id, ticket_id, trial_number)
                if claim is not None:
                    self.check(claim, retry=False)
            except TRANSIENT_ERRORS as exc:
                log.warning("worker %s: heartbeat failed (%s); retrying", self.worker_id, type(exc).__name__)
            except Exception:  # the thread must outlive any one beat
                log.exception("worker %s: heartbeat failed; retrying", self.worker_id)
