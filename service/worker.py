"""The worker loop: claim a ticket, run one Optuna trial through ``study.optimize``, repeat.

One worker per GPU (or per CPU core). Each ticket is one ``study.optimize(objective,
n_trials=1)``; a heartbeat thread renews the ticket's lease and watches for a cancelled or
paused study. The lease is the one judge of a lost worker (``queue.requeue_expired``): Optuna's
own heartbeat is off. SIGTERM / SIGINT stop the worker at the next epoch boundary; the
interrupted trial's parameters go back with its ticket and run again. Nothing raised between
claim and settle ends the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import optuna

from rnntune.service import logs, optuna_compat, queue, routing
from rnntune.service.command import CommandOptions
from rnntune.service.config import Settings
from rnntune.service.data_cache import DataCache, StudyDataError
from rnntune.service.db import TRANSIENT_ERRORS, init_db, make_engine, make_storage, session_factory
from rnntune.service.objective import Objective
from rnntune.service.outcome import Interrupted, Interruption, Outcome, TrialOutcome
from rnntune.service.recipe import TrialRecord
from rnntune.service.search import build_pruner, build_sampler, pinned_sampler
from rnntune.service.spec import StudySpec, load_stored
from rnntune.service.tables import ENDED, StudyState

log = logging.getLogger("rnntune.worker")
T = TypeVar("T")
HOUSEKEEPING_S = 2.0  # how often a worker's claim also requeues expired leases and ends timeouts
MAX_BACKOFF_S = 60.0  # the longest wait after failures outside training in a row
# renew's answer -> why the running trial stops (a study that ended spends the ticket)
_STATUS_INTERRUPTION = {"lost": Interruption.LOST, "paused": Interruption.PAUSED}


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
        command_dirs: list[str] | tuple[str, ...] = (),
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
        self._trial_id: int | None = None
        self._claim_lock = threading.Lock()
        self._beat_stop = threading.Event()
        self._interrupt_reason = Interruption.STOPPED
        self._backoff_s = 0.0  # the wait before the next claim after failures outside training
        self.n_trials_run = 0

        self.engine = make_engine(settings)
        self.sessions = session_factory(self.engine)
        self.storage = make_storage(settings)
        self._studies: dict[tuple, optuna.Study] = {}
        self._specs: dict[tuple, StudySpec] = {}  # by Claim.study_key
        self._next_housekeeping = 0.0
        self.data_cache = DataCache(
            sessions=self.sessions,
            cache_dir=settings.data_dir / "datasets",
            data_roots=settings.roots,
            file_limits=settings.file_limits,
            allow_root_text=settings.allow_root_text,
        )
        # Plugins installed here and command directories the operator allowed: the worker
        # registers them and claims only the studies they cover.
        self.commands = CommandOptions.from_settings(settings, command_dirs)
        self.capabilities = routing.capabilities(commands=bool(self.commands.dirs))

    def can_run(self, requires: dict) -> bool:
        """Whether this worker has what a study needs (its plugins; its script, in an allowed directory)."""
        if routing.missing(requires, self.capabilities):
            return False
        return not requires.get("command") or self.commands.can_run(requires["command"])

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
        beat = threading.Thread(target=self._heartbeat_loop, name="rnntune-heartbeat", daemon=True)
        beat.start()
        try:
            while not self.stopping.is_set():
                if self.max_trials is not None and self.n_trials_run >= self.max_trials:
                    break
                try:
                    claim = self._claim_next()
                    if claim is None:
                        if self.exit_when_idle:
                            break
                        self.stopping.wait(self.settings.poll_interval_s)
                        continue
                    logs.bind(study=claim.study_name, ticket=claim.ticket_id)
                    try:
                        outcome = self._run_ticket(claim)
                    finally:
                        logs.bind(study=None, ticket=None, trial=None)
                    self.n_trials_run += 1
                    self._back_off(outcome)
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
                    self._backoff_s = min(max(self._backoff_s * 2, self.settings.poll_interval_s), MAX_BACKOFF_S)
                    self.stopping.wait(self._backoff_s)
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

    def _claim_next(self) -> queue.Claim | None:
        housekeeping = time.monotonic() >= self._next_housekeeping
        claim = self._with_session(
            lambda s: queue.claim(
                s,
                self.id,
                labels=self.labels,
                lease_s=self.settings.lease_s,
                housekeeping=housekeeping,
                known_specs=self._specs,
                can_run=self.can_run,
                max_retries=self.settings.max_retries,
            )
        )
        if housekeeping:
            self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
            self._db(self.data_cache.prune)  # remove copies of deleted data sets
            self._db(self._forget_deleted)
        return claim

    def _forget_deleted(self) -> None:
        """Drop what this worker cached of studies deleted since (their spec, Optuna study and
        loaded data): a new study may take the name."""
        keys = set(self._specs) | set(self._studies)
        if not keys:
            return
        with self.sessions() as s:
            alive = {tuple(r) for r in s.execute(queue.study_keys([k[0] for k in keys])).all()}
        for key in keys - alive:
            spec = self._specs.pop(key, None)
            study = self._studies.pop(key, None)
            name = spec.name if spec is not None else study.study_name if study is not None else None
            if name is not None:
                self.data_cache.forget(name)
            log.info("worker %s: forgot deleted study %s", self.id, name)

    def _back_off(self, outcome: TrialOutcome) -> None:
        """After a failure outside training (the trial never ran: no trial id), wait before the
        next claim, twice as long each time in a row (up to a minute), so that a study whose
        every ticket breaks the same way is counted failure by failure, not claimed in a loop."""
        if outcome.counts_as_failure and outcome.trial_id is None:
            self._backoff_s = min(max(self._backoff_s * 2, self.settings.poll_interval_s), MAX_BACKOFF_S)
            log.info("worker %s: backing off %.1fs before the next claim", self.id, self._backoff_s)
            self.stopping.wait(self._backoff_s)
        else:
            self._backoff_s = 0.0

    # --- one ticket: claim -> run -> settle ------------------------------------------------
    def _run_ticket(self, claim: queue.Claim) -> TrialOutcome:
        """Run the claimed ticket and settle it. The lease is renewed (heartbeat thread) from
        the claim until the settle has committed, however long the settle's retries take."""
        self._hold(claim)
        try:
            if claim.kind == queue.FINALIZE:
                self._run_finalize(claim)
                return TrialOutcome(Outcome.COMPLETE)
            if claim.kind == queue.REEVAL:
                self._run_reeval(claim)
                return TrialOutcome(Outcome.COMPLETE)
            log.info(
                "worker %s: ticket %d of study %s (attempt %d)", self.id, claim.seq, claim.study_name, claim.attempts
            )
            outcome = self._run_trial(claim)
            settled = self._settle(claim, outcome)
        finally:
            self._hold(None)
        self._log_outcome(claim, outcome, settled)
        if settled.spent and settled.study not in ENDED:
            self._retire_unrun_retries(claim)
        return outcome

    def _run_trial(self, claim: queue.Claim) -> TrialOutcome:
        """Everything between claim and settle, mapped onto one outcome. Nothing raised here
        leaves: an error is a counted failure (or, when the database failed under Optuna's
        bookkeeping, an interruption whose parameters run again), logged with its traceback.
        A ticket this worker no longer holds was judged by the lease sweep: its outcome is
        ``lost``, and settle changes nothing."""
        try:
            spec = self._spec(claim)
            study = self._study(claim, spec)
            objective = self.objective_factory(
                spec,
                device=self.device,
                data_cache=self.data_cache,
                stop=self._interrupt,
                # before a trial may finish: still this worker's ticket, of a study not paused
                # or ended meanwhile (the heartbeat may not have noticed yet)
                still_ours=lambda: self._check_lease(claim, renew=False),
                on_trial_start=lambda trial: self._trial_started(claim, trial),
                interruption=self._interruption,
                commands=self.commands,
            )
            with _pinned(study, claim.params):
                return objective.run(study)
        except TRANSIENT_ERRORS as exc:
            # The database failed under Optuna's own bookkeeping (``tell`` during a restart, or a
            # commit whose acknowledgement was lost): the trial left RUNNING is failed here and
            # its parameters go back with the ticket. If even that fails, the lease sweep judges.
            log.warning("worker %s: storage failed around the trial (%s)", self.id, type(exc).__name__)
            return self._end_trial(claim, Interruption.STORAGE)
        except Exception as exc:
            if not self._still_held(claim):
                log.warning(
                    "worker %s: ticket %d was judged lost while its trial ran (%r)", self.id, claim.ticket_id, exc
                )
                return TrialOutcome.interrupted(Interruption.LOST, *self._trial_ids())
            # Outside training (the study's Optuna study is gone, the sampler cannot be built,
            # Optuna's ask/tell rejected something): a counted failure, and the worker backs off.
            log.exception("worker %s: trial of %s broke outside training", self.id, claim.study_name)
            return self._end_trial(claim, None, reason=f"outside training: {type(exc).__name__}: {exc}")

    def _end_trial(self, claim: queue.Claim, why: Interruption | None, *, reason: str = "") -> TrialOutcome:
        """The outcome of a trial that broke around Optuna's bookkeeping: ``why`` an interruption
        (its parameters run again under the ticket), else a counted failure with ``reason``. A
        trial it left RUNNING is failed here, saying which (so that, should this settle never
        happen, the lease sweep judges it the same way)."""
        trial_id, number = self._trial_ids()
        params: dict | None = None
        attrs = {"interrupted": "storage failed around the trial"} if why else {"fail_reason": "error", "error": reason}
        if trial_id is not None:
            try:
                params = self._db(self._fail_if_running, trial_id, attrs, attempts=4 if self.stopping.is_set() else 30)
            except Exception:
                log.exception("worker %s: could not fail trial %s; the lease sweep will", self.id, number)
        if why is None:
            return TrialOutcome.failed(reason, trial_id, number)
        return TrialOutcome.interrupted(why, trial_id, number, params=params)

    def _fail_if_running(self, trial_id: int, attrs: dict) -> dict:
        """Fail this worker's own RUNNING trial with ``attrs``; returns its parameters."""
        trial = self.storage.get_trial(trial_id)
        if trial.state == optuna.trial.TrialState.RUNNING:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                for key, value in attrs.items():
                    self.storage.set_trial_user_attr(trial_id, key, value)
                self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        return trial.params

    def _still_held(self, claim: queue.Claim) -> bool:
        try:
            return self._with_session(lambda s: queue.holds(s, claim.ticket_id, self.id), attempts=3) != "lost"
        except Exception:
            return True  # unknown: settle finds out

    def _trial_ids(self) -> tuple[int | None, int | None]:
        with self._claim_lock:
            return self._trial_id, self._trial_number

    def _settle(self, claim: queue.Claim, outcome: TrialOutcome) -> queue.Settled:
        """Settle the ticket; keep trying (with backoff) while the database is away, renewing
        the lease meanwhile. When shutting down, give up after ~4 s: the lease and the trial's
        link on the ticket recover the rest."""

        def settle(session) -> queue.Settled:
            settled = queue.settle(session, claim, self.id, outcome)
            with self._claim_lock:  # committed: the heartbeat stops renewing it
                self._claim = None
            return settled

        return self._with_session(settle, attempts=4 if self.stopping.is_set() else 30)

    def _log_outcome(self, claim: queue.Claim, outcome: TrialOutcome, settled: queue.Settled) -> None:
        number = outcome.trial_number
        if not settled.held:
            log.info("worker %s: ticket %d was no longer ours; nothing settled", self.id, claim.ticket_id)
        elif outcome.finished:
            log.info("worker %s: trial %s %s value=%s", self.id, number, outcome.kind, outcome.value)
        elif outcome.kind == Outcome.INTERRUPTED:
            log.info("worker %s: trial %s stopped (%s)", self.id, number, outcome.interruption)
        else:
            log.warning("worker %s: trial %s %s: %s", self.id, number, outcome.kind, outcome.reason)
        if settled.study in (StudyState.FAILED,) and not outcome.finished:
            log.error("worker %s: study %s failed", self.id, claim.study_name)

    def _run_finalize(self, claim: queue.Claim) -> None:
        """Retrain the best configuration, evaluate it once on the test split, store the model."""
        spec = self._spec(claim)
        log.info("worker %s: finalizing study %s (attempt %d)", self.id, claim.study_name, claim.attempts)
        lost = claim.attempts - 1  # an error past max_retries ends the ticket: earlier holders died
        if lost > self.settings.max_retries:
            # A finalize that kills its worker (out of memory, say) would otherwise be claimed and
            # kill the next one forever: the study ends done without a model, and says why.
            message = f"finalize: worker lost {lost} times; last: lease expired"
            log.error("worker %s: %s on study %s, not retried", self.id, message, claim.study_name)
            self._with_session(
                lambda s: queue.settle_finalize(s, claim, self.id, error=message, final=True),
                attempts=4 if self.stopping.is_set() else 30,
            )
            return
        try:
            from rnntune.service.finalize import finalize_study

            study = self._study(claim, spec)
            self._retire_unrun_retries(claim)  # (the worker that spent the last ticket may have died)
            finalize_study(
                spec=spec,
                study=study,
                study_id=claim.study_id,
                sessions=self.sessions,
                device=self.device,
                data_cache=self.data_cache,
                stop=self._interrupt,
            )
        except Exception as exc:  # the storage's transient errors too: the next attempt runs it again
            log.exception("worker %s: finalizing %s failed", self.id, claim.study_name)
            message = f"finalize failed: {type(exc).__name__}: {exc}"
            final = claim.attempts > self.settings.max_retries or isinstance(exc, StudyDataError)
            self._with_session(
                lambda s: queue.settle_finalize(s, claim, self.id, error=message, final=final),
                attempts=4 if self.stopping.is_set() else 30,
            )
            return
        self._with_session(
            lambda s: queue.settle_finalize(s, claim, self.id, error=None, final=True),
            attempts=4 if self.stopping.is_set() else 30,
        )
        log.info("worker %s: study %s finalized", self.id, claim.study_name)

    def _run_reeval(self, claim: queue.Claim) -> None:
        """Train a candidate again with one seed on one fold (``service/selection.py``) and
        settle the run's value. Errors go back to the queue up to ``max_retries`` (deaths count
        too: the expired-lease sweep adds them); a diverged run or data that cannot be cut into
        the fold fails the run at once (it would fail the same way again)."""
        from rnntune.models.train import DivergedError, TrainingStopped
        from rnntune.service.selection import reevaluate

        spec = self._spec(claim)
        run = self._with_session(lambda s: _plain(queue.evaluation(s, claim.ticket_id)))
        attempts = 4 if self.stopping.is_set() else 30

        def settle(**kwargs) -> queue.Settled:
            def apply(session) -> queue.Settled:
                settled = queue.settle_reeval(session, claim, self.id, **kwargs)
                with self._claim_lock:
                    self._claim = None
                return settled

            return self._with_session(apply, attempts=attempts)

        if run is None:  # cannot happen: the ticket and its evaluation are written together
            settle(error="re-evaluation: no evaluation row for this ticket", final=True)
            return
        with self._claim_lock:
            self._trial_number = run["trial_number"]  # the heartbeat shows the candidate
        logs.bind(trial=run["trial_number"])
        limit = self.settings.max_retries
        if run["failures"] > limit:
            reason = (
                f"re-evaluation gave up after {run['failures']} failures (max_retries={limit}); last: {run['error']}"
            )
            log.warning("worker %s: %s", self.id, reason)
            settle(error=reason, final=True)
            return
        log.info(
            "worker %s: re-evaluating trial %d of %s (seed %d, fold %d; attempt %d)",
            self.id, run["trial_number"], claim.study_name, run["seed_index"], run["fold"], claim.attempts,
        )  # fmt: skip
        started = time.monotonic()
        try:
            trial = self._db(self.storage.get_trial, run["trial_id"])
            value, best_epoch = reevaluate(
                spec,
                TrialRecord.of(trial),
                seed_index=run["seed_index"],
                fold=run["fold"],
                device=self.device,
                data_cache=self.data_cache,
                stop=self._interrupt,
            )
        except (Interrupted, TrainingStopped):
            why = self._interruption()
            if why != Interruption.LOST:  # lost: the ticket is another worker's now
                settle(error=f"interrupted: {why}", counts=False)
            return
        except TRANSIENT_ERRORS as exc:
            log.warning("worker %s: storage failed around a re-evaluation (%s)", self.id, type(exc).__name__)
            settle(error=f"storage: {type(exc).__name__}", counts=False)
            return
        except (StudyDataError, DivergedError) as exc:
            log.warning("worker %s: re-evaluation of trial %d failed: %s", self.id, run["trial_number"], exc)
            settle(error=f"{type(exc).__name__}: {exc}", final=True)
            return
        except Exception as exc:
            log.exception("worker %s: re-evaluation of trial %d failed", self.id, run["trial_number"])
            settle(error=f"{type(exc).__name__}: {exc}", final=run["failures"] + 1 > limit)
            return
        # (settle counts it only while this worker still holds the ticket: one that another
        # worker took after our lease ran out is theirs to count)
        settled = settle(value=value, best_epoch=best_epoch, seconds=round(time.monotonic() - started, 3))
        log.info(
            "worker %s: trial %d re-evaluated (seed %d, fold %d): %s=%.6g%s",
            self.id, run["trial_number"], run["seed_index"], run["fold"], spec.metric, value,
            "" if settled.held else " (no longer ours; not counted)",
        )  # fmt: skip

    def _retire_unrun_retries(self, claim: queue.Claim) -> None:
        """The study's last trial ticket is spent, so no ticket will run another trial of it.
        A trial still WAITING (queued outside rnntune, from a writable dashboard or an older
        version's retry copy) will never run, and a trial still RUNNING belongs to no ticket
        (its worker died between Optuna's ``ask`` and recording it on the ticket, before any
        training). Fail them, saying why, rather than leave them for ever."""
        TS = optuna.trial.TrialState
        study = self._studies.get(claim.study_key)
        if study is None:
            return
        try:
            for t in study.get_trials(deepcopy=False, states=(TS.WAITING, TS.RUNNING)):
                why = (
                    "the budget was spent before this retry could run"
                    if t.state == TS.WAITING
                    else "its worker died before the trial was recorded on a ticket"
                )
                try:
                    self.storage.set_trial_user_attr(optuna_compat.trial_id(t), "not_run", why)
                    self.storage.set_trial_state_values(optuna_compat.trial_id(t), TS.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # it finished meanwhile
                log.info("worker %s: trial %d not run: %s", self.id, t.number, why)
        except TRANSIENT_ERRORS:
            log.warning("worker %s: could not retire waiting retries of %s", self.id, study.study_name)

    def _hold(self, claim: queue.Claim | None) -> None:
        """The ticket this worker now runs (None: none). A new one starts uninterrupted unless
        the worker is shutting down."""
        with self._claim_lock:
            self._claim = claim
            self._trial_id = self._trial_number = None
            if claim is not None and not self.stopping.is_set():
                self._interrupt.clear()
                self._interrupt_reason = Interruption.STOPPED

    def _interruption(self) -> Interruption:
        """Why the running trial was told to stop."""
        with self._claim_lock:
            return Interruption.STOPPED if self.stopping.is_set() else self._interrupt_reason

    def _trial_started(self, claim: queue.Claim, trial: optuna.Trial) -> None:
        """The trial exists: record it on the ticket before it trains (a trial that finishes is
        then never run again under this ticket), or stop here if the ticket is no longer ours."""
        logs.bind(trial=trial.number)
        trial_id = optuna_compat.trial_id(trial)
        with self._claim_lock:
            self._trial_id, self._trial_number = trial_id, trial.number  # the heartbeat shows it
        ours = self._with_session(
            lambda s: queue.start_trial(s, claim, self.id, trial_id=trial_id, trial_number=trial.number)
        )
        if not ours:
            with self._claim_lock:
                self._interrupt_reason = Interruption.LOST
            raise Interrupted("the ticket was no longer this worker's when its trial started")
        if claim.retry_of is not None:  # the dashboard and the trials list show where it came from
            self._db(trial.set_user_attr, "retry_of", claim.retry_of)
        elif claim.params:
            self._db(trial.set_user_attr, "initial", True)

    def _spec(self, claim: queue.Claim) -> StudySpec:
        """A study's spec, validated once per worker (it was validated at submission; a study's
        spec never changes), not once per ticket."""
        if claim.study_key not in self._specs:
            if len(self._specs) >= 32:
                self._specs.clear()
            self._specs[claim.study_key] = load_stored(claim.spec)
        return self._specs[claim.study_key]

    def _study(self, claim: queue.Claim, spec: StudySpec) -> optuna.Study:
        """One Study object per study for the worker's life: its storage cache then reads only
        the trials that changed since the last ticket, and its sampler keeps what it has
        learned of the search space (TPE's intersection search space is incremental).

        The sampler is seeded once, with the spec's seed plus the sequence number of the first
        ticket this worker runs for the study: a single worker's run is reproducible, and two
        workers never share a seed (no two run the same ticket first; a retried ticket's
        attempt count moves the offset)."""
        key = claim.study_key  # a deleted study's name may come back as another study
        if key not in self._studies:
            if len(self._studies) >= 32:
                self._studies.clear()
            self._studies[key] = optuna.load_study(
                study_name=claim.study_name,
                storage=self.storage,
                sampler=build_sampler(spec, seed_offset=claim.seq + 100_003 * (claim.attempts - 1)),
                pruner=build_pruner(spec),
            )
        return self._studies[key]

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
            except Exception:  # the thread must outlive any one beat
                log.exception("worker %s: heartbeat failed; retrying", self.id)

    def _check_lease(self, claim: queue.Claim, *, renew: bool = True, retry: bool = True) -> bool:
        """Renew (or, read-only, check) the ticket's lease; when it is lost or the study stopped,
        record why and interrupt the trial."""
        if renew:
            check = lambda s: queue.renew(s, claim.ticket_id, self.id, lease_s=self.settings.lease_s)  # noqa: E731
        else:
            check = lambda s: queue.holds(s, claim.ticket_id, self.id)  # noqa: E731
        status = self._with_session(check) if retry else _in_session(self.sessions, check)
        if status != "ok":
            with self._claim_lock:  # (a claim that was settled meanwhile is no longer held)
                if self._claim is claim and not self._interrupt.is_set():
                    log.info("worker %s: ticket %d: %s; stopping its trial", self.id, claim.ticket_id, status)
                    self._interrupt_reason = _STATUS_INTERRUPTION.get(status, Interruption.CANCELLED)
                    self._interrupt.set()
        return status == "ok"

    # --- database helpers ----------------------------------------------------------------
    def _with_session(self, fn: Callable, attempts: int = 8) -> T:
        return self._db(lambda: _in_session(self.sessions, fn), attempts=attempts)

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


@contextlib.contextmanager
def _pinned(study: optuna.Study, params: dict | None) -> Iterator[None]:
    """Run the next trial of ``study`` with ``params`` fixed (a ticket that carries them)."""
    if not params:
        yield
        return
    base = study.sampler
    study.sampler = pinned_sampler(base, params)
    try:
        yield
    finally:
        study.sampler = base


def _in_session(sessions, fn):
    with sessions() as session:
        return fn(session)


def _plain(row) -> dict | None:
    """An ORM row's columns, read while its session is open."""
    if row is None:
        return None
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


# --- supervision: a worker started by ``serve`` / ``worker --per-gpu`` never outlives it ------

SUPERVISOR_ENV = "RNNTUNE_SUPERVISOR_PID"  # set by the supervisor for the workers it starts
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``prctl``
    PR_SET_PDEATHSIG, through ctypes). False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_supervisor(worker: Worker, supervisor_pid: int, period_s: float = 1.0) -> None:
    """Stop ``worker`` gracefully (as SIGTERM would) when the process that started it dies,
    even by SIGKILL: the parent-death signal on Linux, and everywhere a thread that notices
    the parent pid change (the process is re-parented) within ``period_s``."""
    parent_death_signal(signal.SIGTERM)

    def orphaned() -> bool:
        return os.getppid() != supervisor_pid

    def stop() -> None:
        log.warning("worker %s: its supervisor (pid %d) is gone; stopping", worker.id, supervisor_pid)
        worker.stop()

    if orphaned():  # it died before the signal was armed
        stop()
        return

    def watch() -> None:
        while not worker.stopping.wait(period_s):
            if orphaned():
                stop()
                return

    threading.Thread(target=watch, name="rnntune-supervisor-watch", daemon=True).start()
