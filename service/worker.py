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
from collections.abc import Callable
from typing import TypeVar

import optuna

from rnntune.service import logs, queue
from rnntune.service.config import Settings
from rnntune.service.db import TRANSIENT_ERRORS, init_db, make_engine, make_storage, session_factory
from rnntune.service.objective import DataCache, Interrupted, Objective, StudyDataError
from rnntune.service.search import build_pruner, build_sampler
from rnntune.service.spec import StudySpec

log = logging.getLogger("rnntune.worker")
T = TypeVar("T")
HOUSEKEEPING_S = 2.0  # how often a worker's claim also requeues expired leases and ends timeouts


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
        objective_factory: Callable[..., Objective] = Objective,
    ):
        self.settings = settings
        self.labels = set(labels or ())
        self.device = pick_device(device)
        self.threads = threads or settings.torch_threads
        self.max_trials = max_trials
        self.exit_when_idle = exit_when_idle
        self.objective_factory = objective_factory  # benchmarks swap in a trivial objective
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()  # shutdown asked: finish at the next epoch boundary
        self._interrupt = threading.Event()  # the running trial must stop (shutdown / cancel / lease lost)
        self._claim: queue.Claim | None = None
        self._trial_number: int | None = None  # the running ticket's Optuna trial, once it has one
        self._claim_lock = threading.Lock()
        self._beat_stop = threading.Event()
        self._interrupt_reason = "shutdown"
        self.n_trials_run = 0

        self.engine = make_engine(settings)
        self.sessions = session_factory(self.engine)
        self.storage = make_storage(settings, heartbeat=True)
        self._studies: dict[str, optuna.Study] = {}
        self._specs: dict[int, StudySpec] = {}
        self._next_housekeeping = 0.0
        self.data_cache = DataCache(
            sessions=self.sessions,
            cache_dir=settings.data_dir / "datasets",
            data_roots=settings.roots,
            file_limits=settings.file_limits,
        )

    # --- lifecycle -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            log.info(
                "worker %s: %s received, stopping at the next epoch boundary", self.id, signal.Signals(signum).name
            )
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
        self._with_session(
            lambda s: queue.register_worker(s, self.id, device=self.device, labels=self.labels, pid=os.getpid())
        )
        logs.bind(worker=self.id)  # every log line of this process carries the worker id
        log.info(
            "worker %s up: device=%s threads=%s labels=%s",
            self.id,
            self.device,
            torch.get_num_threads(),
            sorted(self.labels),
        )
        beat = threading.Thread(target=self._heartbeat_loop, name="rnntune-heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stopping.is_set():
                if self.max_trials is not None and self.n_trials_run >= self.max_trials:
                    break
                try:
                    housekeeping = time.monotonic() >= self._next_housekeeping
                    claim = self._with_session(
                        lambda s, housekeeping=housekeeping: queue.claim(
                            s,
                            self.id,
                            labels=self.labels,
                            lease_s=self.settings.lease_s,
                            housekeeping=housekeeping,
                            known_specs=self._specs,
                        )
                    )
                    if housekeeping:
                        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                        self._db(self.data_cache.prune)  # remove copies of deleted data sets
                    if claim is None:
                        if self.exit_when_idle:
                            break
                        self.stopping.wait(self.settings.poll_interval_s)
                        continue
                    logs.bind(study=claim.study_name, ticket=claim.ticket_id)
                    try:
                        self._run_ticket(claim)
                    finally:
                        logs.bind(study=None, ticket=None, trial=None)
                    self.n_trials_run += 1
                except TRANSIENT_ERRORS as exc:
                    # The database stayed away through every retry: whatever we held comes back
                    # to the queue when its lease expires. Keep the worker; try again later.
                    log.error("worker %s: database unavailable (%s); waiting", self.id, type(exc).__name__)
                    self.stopping.wait(10.0)
        finally:
            self.stopping.set()
            self._beat_stop.set()
            beat.join(timeout=5)
            try:
                self._with_session(lambda s: queue.deregister_worker(s, self.id), attempts=3)
            except Exception:
                log.warning("worker %s: could not deregister", self.id)
            log.info("worker %s stopped after %d trials", self.id, self.n_trials_run)
            logs.bind(worker=None)
        return 0

    # --- one ticket ----------------------------------------------------------------------
    def _run_ticket(self, claim: queue.Claim) -> None:
        if claim.kind == "finalize":
            return self._run_finalize(claim)
        spec = self._spec(claim)
        self._hold(claim)
        log.info("worker %s: ticket %d of study %s (attempt %d)", self.id, claim.seq, claim.study_name, claim.attempts)
        objective = self.objective_factory(
            spec,
            device=self.device,
            data_cache=self.data_cache,
            stop=self._interrupt,
            still_ours=lambda: self._check_lease(claim, renew=False),
            on_trial_start=self._trial_started,
        )
        try:
            study = self._study(claim, spec)
            study.optimize(objective, n_trials=1, catch=(Exception,))
        except Exception as exc:
            log.exception("worker %s: trial of %s broke outside training", self.id, claim.study_name)
            self._recover_trial(claim, objective)
            broke = f"{type(exc).__name__}: {exc}"
            self._settle(lambda s: queue.release(s, claim, self.id, error=broke, failed=False))
            return
        finally:
            self._hold(None)

        number = objective.trial_number
        if objective.outcome is not None:  # the trial finished: COMPLETE or PRUNED
            state, value = objective.outcome
            spent = self._settle(lambda s: queue.complete(s, claim, self.id, state, trial_number=number))
            log.info("worker %s: trial %d %s value=%s", self.id, number, state, value)
            if spent:
                self._retire_unrun_retries(study)
            return
        error = objective.error
        if isinstance(error, StudyDataError):
            log.error("worker %s: study %s failed: %s", self.id, claim.study_name, error)
            self._settle(
                lambda s: (queue.finish_study(s, claim.study_id, "failed", str(error)), queue.drop(s, claim, self.id))
            )
            return
        if isinstance(error, Interrupted):
            reason = "shutdown" if self.stopping.is_set() else self._interrupt_reason
            log.info("worker %s: trial %s stopped (%s)", self.id, number, reason)
            if reason in ("shutdown", "paused") and objective.params is not None:
                # The same parameters run again on the next claim (after a resume, for a pause).
                study.enqueue_trial(objective.params, user_attrs={"retry_of": number})
                self._settle(lambda s: queue.release(s, claim, self.id, error=f"interrupted: {reason}", failed=False))
            elif reason != "lost":  # the study ended (cancelled, failed): the ticket is spent
                self._settle(lambda s: queue.drop(s, claim, self.id))
            # lost: the lease expired and the ticket is queued again; nothing of it is ours
            return
        message = f"{type(error).__name__}: {error}" if error else "trial failed"
        log.warning("worker %s: trial %s failed: %s", self.id, number, message)
        self._settle(lambda s: queue.release(s, claim, self.id, error=message, failed=True))

    def _run_finalize(self, claim: queue.Claim) -> None:
        """Retrain the best configuration, evaluate it once on the test split, store the model."""
        spec = self._spec(claim)
        self._hold(claim)
        log.info("worker %s: finalizing study %s (attempt %d)", self.id, claim.study_name, claim.attempts)
        try:
            from rnntune.service.finalize import finalize_study

            study = self._study(claim, spec)
            finalize_study(
                spec=spec,
                study=study,
                study_id=claim.study_id,
                sessions=self.sessions,
                device=self.device,
                data_cache=self.data_cache,
                stop=self._interrupt,
            )
        except Exception as exc:
            log.exception("worker %s: finalizing %s failed", self.id, claim.study_name)
            message = f"finalize failed: {type(exc).__name__}: {exc}"
            if claim.attempts > self.settings.max_retries or isinstance(exc, StudyDataError):
                self._settle(
                    lambda s: (queue.complete(s, claim, self.id, "FAIL"), queue.note_study(s, claim.study_id, message))
                )
            else:
                self._settle(lambda s: queue.release(s, claim, self.id, error=message, failed=False))
            return
        finally:
            self._hold(None)
        self._settle(lambda s: queue.complete(s, claim, self.id, "COMPLETE"))
        log.info("worker %s: study %s finalized", self.id, claim.study_name)

    def _recover_trial(self, claim: queue.Claim, objective: Objective) -> None:
        """The database failed under Optuna's own bookkeeping (e.g. ``tell`` during a restart):
        fail the trial it left RUNNING and queue its parameters again, instead of waiting for
        the heartbeat's grace period (and leaving the retry without a ticket)."""
        if objective.trial_id is None:
            return
        TS = optuna.trial.TrialState

        def fail_and_requeue() -> None:
            trial = self.storage.get_trial(objective.trial_id)
            if trial.state != TS.RUNNING:
                return
            if self.storage.set_trial_state_values(objective.trial_id, TS.FAIL) and trial.params:
                study = self._studies.get(claim.study_name) or optuna.load_study(
                    study_name=claim.study_name, storage=self.storage
                )
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

        try:
            self._db(fail_and_requeue, attempts=4 if self.stopping.is_set() else 30)
        except Exception:
            log.exception("worker %s: could not fail trial %s; its heartbeat will", self.id, objective.trial_number)

    def _retire_unrun_retries(self, study: optuna.Study) -> None:
        """The study's last trial ticket is spent: a retry copy still WAITING (a dead worker's
        trial, failed by its heartbeat after another ticket had already started a fresh trial)
        will never get a ticket. Fail it, saying why, rather than leave it waiting forever."""
        TS = optuna.trial.TrialState
        try:
            for t in study.get_trials(deepcopy=False, states=(TS.WAITING,)):
                self.storage.set_trial_user_attr(
                    t._trial_id, "not_run", "the budget was spent before this retry could run"
                )
                self.storage.set_trial_state_values(t._trial_id, TS.FAIL)
                log.info("worker %s: trial %d not run: the study's budget is spent", self.id, t.number)
        except TRANSIENT_ERRORS:
            log.warning("worker %s: could not retire waiting retries of %s", self.id, study.study_name)

    def _hold(self, claim: queue.Claim | None) -> None:
        """The ticket this worker now runs (None: none). A new one starts uninterrupted unless
        the worker is shutting down."""
        with self._claim_lock:
            self._claim = claim
            self._trial_number = None
            if claim is not None and not self.stopping.is_set():
                self._interrupt.clear()
                self._interrupt_reason = "shutdown"

    def _trial_started(self, trial: optuna.Trial) -> None:
        logs.bind(trial=trial.number)
        with self._claim_lock:
            self._trial_number = trial.number  # the heartbeat shows it in rnntune_workers

    def _spec(self, claim: queue.Claim) -> StudySpec:
        """A study's spec, validated once per worker (it was validated at submission; a study's
        spec never changes), not once per ticket."""
        if claim.study_id not in self._specs:
            if len(self._specs) >= 32:
                self._specs.clear()
            self._specs[claim.study_id] = StudySpec.model_validate(claim.spec)
        return self._specs[claim.study_id]

    def _study(self, claim: queue.Claim, spec: StudySpec) -> optuna.Study:
        """One Study object per study for the worker's life: its storage cache then reads only
        the trials that changed since the last ticket, and its sampler keeps what it has
        learned of the search space (TPE's intersection search space is incremental).

        The sampler is seeded once, with the spec's seed plus the sequence number of the first
        ticket this worker runs for the study: a single worker's run is reproducible, and two
        workers never share a seed (no two run the same ticket first; a retried ticket's
        attempt count moves the offset)."""
        name = claim.study_name
        if name not in self._studies:
            if len(self._studies) >= 32:
                self._studies.clear()
            self._studies[name] = optuna.load_study(
                study_name=name,
                storage=self.storage,
                sampler=build_sampler(spec, seed_offset=claim.seq + 100_003 * (claim.attempts - 1)),
                pruner=build_pruner(spec),
            )
        return self._studies[name]

    # --- background: lease renewal, worker heartbeat, cancel detection -------------------
    def _heartbeat_loop(self) -> None:
        period = min(self.settings.lease_s / 4, 5.0)
        while not self._beat_stop.wait(period):
            with self._claim_lock:
                claim, trial_number = self._claim, self._trial_number
            try:
                with self.sessions() as s:
                    queue.worker_heartbeat(s, self.id, claim.ticket_id if claim is not None else None, trial_number)
                if claim is not None:
                    self._check_lease(claim, retry=False)
            except TRANSIENT_ERRORS as exc:
                log.warning("worker %s: heartbeat failed (%s); retrying", self.id, type(exc).__name__)

    def _check_lease(self, claim: queue.Claim, *, renew: bool = True, retry: bool = True) -> bool:
        """Renew (or, read-only, check) the ticket's lease; when it is lost or the study stopped,
        record why and interrupt the trial."""
        if renew:
            check = lambda s: queue.renew(s, claim.ticket_id, self.id, lease_s=self.settings.lease_s)  # noqa: E731
        else:
            check = lambda s: queue.holds(s, claim.ticket_id, self.id)  # noqa: E731
        status = self._with_session(check) if retry else _in_session(self.sessions, check)
        if status != "ok":
            with self._claim_lock:
                if self._claim is claim and not self._interrupt.is_set():
                    log.info("worker %s: ticket %d: %s; stopping its trial", self.id, claim.ticket_id, status)
                    self._interrupt_reason = status
                    self._interrupt.set()
        return status == "ok"

    # --- database helpers ----------------------------------------------------------------
    def _with_session(self, fn: Callable, attempts: int = 8) -> T:
        return self._db(lambda: _in_session(self.sessions, fn), attempts=attempts)

    def _settle(self, fn: Callable[..., T]) -> T:
        """Record a ticket's end; keep trying (with backoff) while the database is away. When
        shutting down, give up after ~4 s: the lease and the trial's heartbeat recover the rest."""
        return self._with_session(fn, attempts=4 if self.stopping.is_set() else 30)

    def _db(self, fn: Callable[..., T], *args, attempts: int = 8) -> T:
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args)
            except TRANSIENT_ERRORS as exc:
                if attempt == attempts:
                    raise
                log.warning(
                    "worker %s: database error (%s), retry %d in %.1fs", self.id, type(exc).__name__, attempt, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")


def _in_session(sessions, fn):
    with sessions() as session:
        return fn(session)
