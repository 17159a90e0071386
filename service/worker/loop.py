"""The worker loop: claim a ticket, run it by its kind's handler, settle what it came to, repeat.

``run`` -> ``_run_loop`` -> ``_process_ticket``: the handler of the ticket's kind (``trial``,
``reeval``, ``finalize``) returns one result (``results.Result``), and ``_settle`` records it,
once, in one transaction. A heartbeat thread renews the ticket's lease from claim until that
settle commits and watches for a cancelled or paused study (``lease.Lease``). The lease is the
one judge of a lost worker (``queue.requeue_expired``): Optuna's own heartbeat is off.
SIGTERM / SIGINT stop the worker at the next epoch boundary; the interrupted trial's parameters
go back with its ticket and run again. Nothing raised between claim and settle ends the worker.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

import torch
from sqlalchemy.orm import Session

from rnntune.service import logs, queue
from rnntune.service.store.db import TRANSIENT_ERRORS, init_db
from rnntune.service.store.tables import ENDED, TicketKind
from rnntune.service.trials.outcome import TrialOutcome
from rnntune.service.worker.base import WorkerBase
from rnntune.service.worker.finalize import run_finalize
from rnntune.service.worker.reeval import run_reeval
from rnntune.service.worker.results import Finalized, Lost, Reevaluated, Result, broke_outside_training, settle_result
from rnntune.service.worker.trial import log_outcome, retire_unrun_retries, run_trial

log = logging.getLogger("rnntune.worker")
HOUSEKEEPING_S = 2.0  # how often a worker's claim also requeues expired leases and ends timeouts
MAX_BACKOFF_S = 60.0  # the longest wait after failures outside training in a row
# a ticket's kind -> its handler (any other kind: a trial)
HANDLERS: dict[str, Callable[[WorkerBase, queue.Claim], Result]] = {
    TicketKind.REEVAL: run_reeval,
    TicketKind.FINALIZE: run_finalize,
}


class Worker(WorkerBase):
    """One worker per GPU (or per CPU core): claims the tickets of the studies it can run."""

    # --- lifecycle -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info(
                "worker %s: %s received, stopping at the next epoch boundary", self.id, signal.Signals(signum).name
            )
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def stop(self) -> None:
        self.stopping.set()
        self.lease.interrupt.set()

    def run(self) -> int:
        """Register, claim and run tickets until stopped (or idle with ``exit_when_idle``, or
        after ``max_trials`` tickets), deregister."""
        if self.device == "cpu" or self.threads:
            torch.set_num_threads(self.threads or 1)
        self._db(init_db, self.engine)
        self._with_session(
            lambda s: queue.register_worker(
                s, self.id, device=self.device, labels=self.labels, pid=os.getpid(), capabilities=self.capabilities
            )
        )
        logs.bind(worker=self.id)  # every log line of this process carries the worker id
        log.info(
            "worker %s up: device=%s threads=%s labels=%s plugins=%s command dirs=%s",
            self.id,
            self.device,
            torch.get_num_threads(),
            sorted(self.labels),
            [f"{p['group']}:{p['name']}" for p in self.capabilities["plugins"]],
            [str(d) for d in self.commands.dirs],
        )
        self.lease.start_heartbeat()
        try:
            self._run_loop()
        finally:
            self.stopping.set()
            self.lease.stop_heartbeat()
            try:
                self._with_session(lambda s: queue.deregister_worker(s, self.id), attempts=3)
            except Exception:
                log.warning("worker %s: could not deregister", self.id)
            log.info("worker %s stopped after %d trials", self.id, self.n_trials_run)
            logs.bind(worker=None)
        return 0

    def _run_loop(self) -> None:
        while not self.stopping.is_set():
            if self.max_trials is not None and self.n_trials_run >= self.max_trials:
                return
            try:
                claim = self._claim_next()
                if claim is None:
                    if self.exit_when_idle:
                        return
                    self.stopping.wait(self.settings.poll_interval_s)
                    continue
                result = self._process_ticket(claim)
                self.n_trials_run += 1
                self._back_off(result)
            except TRANSIENT_ERRORS as exc:
                # The database stayed away through every retry: whatever we held comes back
                # to the queue when its lease expires. Keep the worker; try again later.
                log.error("worker %s: database unavailable (%s); waiting", self.id, type(exc).__name__)
                self.stopping.wait(10.0)
            except Exception:
                # Anything else between claim and settle (a settle the lifecycle refused, a
                # bug): the ticket is no longer renewed, so its lease expires and the sweep
                # judges it. The worker logs it, backs off, and goes on.
                log.exception("worker %s: unexpected error around a ticket; its lease will bring it back", self.id)
                self.stopping.wait(self._longer_backoff())

    def _claim_next(self) -> queue.Claim | None:
        housekeeping = time.monotonic() >= self._next_housekeeping
        claim = self._with_session(
            lambda s: queue.claim(
                s,
                self.id,
                labels=self.labels,
                lease_s=self.settings.lease_s,
                housekeeping=housekeeping,
                known_specs=self._specs,  # keyed by Claim.study_key, as claim looks them up
                can_run=self.can_run,
                max_retries=self.settings.max_retries,
            )
        )
        if housekeeping:
            self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
            self._db(self.data_cache.prune)  # remove copies of deleted data sets
            self._db(self._forget_deleted)
        return claim

    def _back_off(self, result: Result) -> None:
        """After a failure outside training (the trial never ran: no trial id), wait before the
        next claim, twice as long each time in a row (up to a minute), so that a study whose
        every ticket breaks the same way is counted failure by failure, not claimed in a loop."""
        if broke_outside_training(result):
            wait = self._longer_backoff()
            log.info("worker %s: backing off %.1fs before the next claim", self.id, wait)
            self.stopping.wait(wait)
        else:
            self._backoff_s = 0.0

    def _longer_backoff(self) -> float:
        """The next wait after failures in a row: twice the last, from the poll interval up to a minute."""
        self._backoff_s = min(max(self._backoff_s * 2, self.settings.poll_interval_s), MAX_BACKOFF_S)
        return self._backoff_s

    # --- one ticket: claim -> run -> settle ------------------------------------------------
    def _process_ticket(self, claim: queue.Claim) -> Result:
        """Run the claimed ticket by its kind's handler and settle what it came to. The lease is
        renewed (heartbeat thread) from the claim until the settle has committed, however long
        the settle's retries take."""
        logs.bind(study=claim.study_name, ticket=claim.ticket_id)
        try:
            self.lease.hold(claim)
            try:
                result = HANDLERS.get(claim.kind, run_trial)(self, claim)
                settled = self._settle(claim, result)
            finally:
                self.lease.hold(None)
            self._after_settle(claim, result, settled)
        finally:
            logs.bind(study=None, ticket=None, trial=None)
        return result

    def _settle(self, claim: queue.Claim, result: Result) -> queue.Settled | None:
        """Record ``result`` (None: nothing to record); keep trying (with backoff) while the
        database is away, renewing the lease meanwhile. When shutting down, give up after ~4 s:
        the lease and the trial's link on the ticket recover the rest."""
        if isinstance(result, Lost):  # the lease sweep judged it
            return None

        def apply(session: Session) -> queue.Settled:
            settled = settle_result(session, claim, self.id, result)
            self.lease.settled()  # committed: the heartbeat stops renewing it
            return settled

        return self._with_session(apply, attempts=self._patient())

    def _after_settle(self, claim: queue.Claim, result: Result, settled: queue.Settled | None) -> None:
        """Log how the settled ticket ended; once a study's trial tickets are spent, fail its
        trials that no ticket will run."""
        if settled is None:
            return
        if isinstance(result, TrialOutcome):
            log_outcome(self.id, claim, result, settled)
            if settled.spent and settled.study not in ENDED:
                retire_unrun_retries(self, claim)
        elif isinstance(result, Reevaluated) and result.note:
            held = "" if settled.held else " (no longer ours; not counted)"
            log.info("worker %s: %s%s", self.id, result.note, held)
        elif isinstance(result, Finalized) and result.error is None:
            log.info("worker %s: study %s finalized", self.id, claim.study_name)
