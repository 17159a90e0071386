"""The worker loop: claim a ticket, run one Optuna trial through ``study.optimize``, repeat.

One worker per GPU (or per CPU core). Each ticket is one ``study.optimize(objective,
n_trials=1)`` so that Optuna's heartbeat thread runs while the trial trains; our own heartbeat
thread renews the ticket's lease and watches for a cancelled study. SIGTERM / SIGINT stop the
worker at the next epoch boundary; the interrupted trial is re-queued with the same parameters.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Callable, TypeVar

import optuna
from sqlalchemy.exc import DBAPIError, OperationalError

from service import queue
from service.config import Settings
from service.db import init_db, make_engine, make_storage, session_factory
from service.objective import DataCache, Interrupted, Objective, StudyDataError
from service.search import build_pruner, build_sampler
from service.spec import StudySpec

log = logging.getLogger("rnntune.worker")
T = TypeVar("T")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        labels: set[str] | None = None,
        device: str = "auto",
        threads: int | None = None,
        max_trials: int | None = None,
        exit_when_idle: bool = False,
    ):
        self.settings = settings
        self.labels = set(labels or ())
        self.device = pick_device(device)
        self.threads = threads or settings.torch_threads
        self.max_trials = max_trials
        self.exit_when_idle = exit_when_idle
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()  # shutdown asked: finish at the next epoch boundary
        self._interrupt = threading.Event()  # the running trial must stop (shutdown / cancel / lease lost)
        self._claim: queue.Claim | None = None
        self._claim_lock = threading.Lock()
        self._beat_stop = threading.Event()
        self.n_trials_run = 0

        self.engine = make_engine(settings)
        self.sessions = session_factory(self.engine)
        self.storage = make_storage(settings, heartbeat=True)
        self.data_cache = DataCache()

    # --- lifecycle -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            log.info("worker %s: %s received, stopping at the next epoch boundary", self.id, signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def stop(self) -> None:
        self.stopping.set()
        self._interrupt.set()

    def run(self) -> int:
        import torch

        if self.device == "cpu" or self.threads:
            torch.set_num_threads(self.threads or 1)
        self._db(init_db, self.engine)
        self._with_session(lambda s: queue.register_worker(s, self.id, device=self.device, labels=self.labels, pid=os.getpid()))
        log.info("worker %s up: device=%s threads=%s labels=%s", self.id, self.device, torch.get_num_threads(), sorted(self.labels))
        beat = threading.Thread(target=self._heartbeat_loop, name="rnntune-heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stopping.is_set():
                if self.max_trials is not None and self.n_trials_run >= self.max_trials:
                    break
                claim = self._with_session(
                    lambda s: queue.claim(s, self.id, labels=self.labels, lease_s=self.settings.lease_s)
                )
                if claim is None:
                    if self.exit_when_idle:
                        break
                    self.stopping.wait(self.settings.poll_interval_s)
                    continue
                self._run_ticket(claim)
                self.n_trials_run += 1
        finally:
            self.stopping.set()
            self._beat_stop.set()
            beat.join(timeout=5)
            try:
                self._with_session(lambda s: queue.deregister_worker(s, self.id), attempts=3)
            except Exception:  # noqa: BLE001 - never fail the exit on a dead database
                log.warning("worker %s: could not deregister", self.id)
            log.info("worker %s stopped after %d trials", self.id, self.n_trials_run)
        return 0

    # --- one ticket ----------------------------------------------------------------------
    def _run_ticket(self, claim: queue.Claim) -> None:
        spec = StudySpec.model_validate(claim.spec)
        with self._claim_lock:
            self._claim = claim
            if not self.stopping.is_set():
                self._interrupt.clear()
        log.info("worker %s: ticket %d of study %s (attempt %d)", self.id, claim.seq, claim.study_name, claim.attempts)
        outcome: list[optuna.trial.FrozenTrial] = []
        objective = Objective(
            spec,
            device=self.device,
            data_cache=self.data_cache,
            stop=self._interrupt,
            on_trial_start=lambda t: self._with_session(lambda s: queue.set_trial(s, claim.ticket_id, self.id, t.number)),
        )
        try:
            study = optuna.load_study(
                study_name=claim.study_name,
                storage=self.storage,
                sampler=build_sampler(spec, seed_offset=claim.seq + 100_003 * (claim.attempts - 1)),
                pruner=build_pruner(spec),
            )
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[lambda _s, t: outcome.append(t)])
        except Exception as exc:  # noqa: BLE001 - storage trouble: hand the ticket back, keep the worker
            log.exception("worker %s: trial of %s broke outside training", self.id, claim.study_name)
            self._settle(lambda s: queue.release(s, claim, self.id, error=f"{type(exc).__name__}: {exc}", failed=False))
            return
        finally:
            with self._claim_lock:
                self._claim = None

        trial = outcome[0] if outcome else None
        if trial is not None and trial.state in FINISHED:
            self._settle(lambda s: queue.complete(s, claim, self.id, trial.state.name))
            log.info("worker %s: trial %d %s value=%s", self.id, trial.number, trial.state.name, trial.value)
            return
        error = objective.error
        if isinstance(error, StudyDataError):
            log.error("worker %s: study %s failed: %s", self.id, claim.study_name, error)
            self._settle(lambda s: (queue.finish_study(s, claim.study_id, "failed", str(error)), queue.drop(s, claim, self.id)))
            return
        if isinstance(error, Interrupted):
            if self.stopping.is_set() and objective.params is not None:
                # Shutdown: the same parameters run again on the next worker that claims a ticket.
                study.enqueue_trial(objective.params, user_attrs={"retry_of": trial.number if trial else None})
                self._settle(lambda s: queue.release(s, claim, self.id, error="worker shut down", failed=False))
            else:  # the study was cancelled or paused, or this worker lost its lease
                self._settle(lambda s: queue.drop_or_release(s, claim, self.id))
            return
        message = f"{type(error).__name__}: {error}" if error else "trial failed"
        log.warning("worker %s: trial %s failed: %s", self.id, trial.number if trial else "?", message)
        self._settle(lambda s: queue.release(s, claim, self.id, error=message, failed=True))

    # --- background: lease renewal, worker heartbeat, cancel detection -------------------
    def _heartbeat_loop(self) -> None:
        period = min(self.settings.lease_s / 4, 10.0)
        while not self._beat_stop.wait(period):
            with self._claim_lock:
                claim = self._claim
            try:
                with self.sessions() as s:
                    queue.worker_heartbeat(s, self.id)
                    if claim is not None and not queue.renew(s, claim.ticket_id, self.id, lease_s=self.settings.lease_s):
                        log.info("worker %s: ticket %d is no longer ours or its study ended; stopping the trial", self.id, claim.ticket_id)
                        self._interrupt.set()
            except (OperationalError, DBAPIError) as exc:
                log.warning("worker %s: heartbeat failed (%s); retrying", self.id, type(exc).__name__)

    # --- database helpers ----------------------------------------------------------------
    def _with_session(self, fn: Callable, attempts: int = 8) -> T:
        return self._db(lambda: _in_session(self.sessions, fn), attempts=attempts)

    def _settle(self, fn: Callable) -> None:
        """Record a ticket's end; keep trying (with backoff) while the database is away."""
        self._with_session(fn, attempts=30)

    def _db(self, fn: Callable[..., T], *args, attempts: int = 8) -> T:
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args)
            except (OperationalError, DBAPIError) as exc:
                if attempt == attempts:
                    raise
                log.warning("worker %s: database error (%s), retry %d in %.1fs", self.id, type(exc).__name__, attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")


def _in_session(sessions, fn):
    with sessions() as session:
        return fn(session)
