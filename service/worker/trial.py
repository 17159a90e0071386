"""A trial ticket's handler: one Optuna trial through ``study.optimize``, mapped onto one
:class:`~rnntune.service.trials.outcome.TrialOutcome`, and what the worker does once it is settled."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import optuna

from rnntune.service import logs, queue
from rnntune.service.search import pinned_sampler
from rnntune.service.store import optuna_compat
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.db import TRANSIENT_ERRORS
from rnntune.service.store.tables import LeaseState, StudyState
from rnntune.service.trials.outcome import Interrupted, Interruption, Outcome, TrialOutcome
from rnntune.service.worker.base import WorkerBase

log = logging.getLogger("rnntune.worker")
TS = optuna.trial.TrialState


def run_trial(worker: WorkerBase, claim: queue.Claim) -> TrialOutcome:
    """Everything between claim and settle, mapped onto one outcome. Nothing raised here
    leaves: an error is a counted failure (or, when the database failed under Optuna's
    bookkeeping, an interruption whose parameters run again), logged with its traceback.
    A ticket this worker no longer holds was judged by the lease sweep: its outcome is
    ``lost``, and settle changes nothing."""
    log.info("worker %s: ticket %d of study %s (attempt %d)", worker.id, claim.seq, claim.study_name, claim.attempts)
    try:
        spec = worker._spec(claim)
        study = worker._study(claim, spec)
        objective = worker.objective_factory(
            spec,
            device=worker.device,
            data_cache=worker.data_cache,
            stop=worker.lease.interrupt,
            # before a trial may finish: still this worker's ticket, of a study not paused
            # or ended meanwhile (the heartbeat may not have noticed yet)
            still_ours=lambda: worker.lease.check(claim, renew=False),
            on_trial_start=lambda trial: _trial_started(worker, claim, trial),
            interruption=worker.lease.interruption,
            commands=worker.commands,
        )
        with _pinned(study, claim.params):
            return objective.run(study)
    except TRANSIENT_ERRORS as exc:
        # The database failed under Optuna's own bookkeeping (``tell`` during a restart, or a
        # commit whose acknowledgement was lost): the trial left RUNNING is failed here and
        # its parameters go back with the ticket. If even that fails, the lease sweep judges.
        log.warning("worker %s: storage failed around the trial (%s)", worker.id, type(exc).__name__)
        return end_trial(worker, Interruption.STORAGE)
    except Exception as exc:
        if not _still_held(worker, claim):
            log.warning(
                "worker %s: ticket %d was judged lost while its trial ran (%r)", worker.id, claim.ticket_id, exc
            )
            return TrialOutcome.interrupted(Interruption.LOST, *worker.lease.trial_ids())
        # Outside training (the study's Optuna study is gone, the sampler cannot be built,
        # Optuna's ask/tell rejected something): a counted failure, and the worker backs off.
        log.exception("worker %s: trial of %s broke outside training", worker.id, claim.study_name)
        return end_trial(worker, None, reason=f"outside training: {type(exc).__name__}: {exc}")


def end_trial(worker: WorkerBase, why: Interruption | None, *, reason: str = "") -> TrialOutcome:
    """The outcome of a trial that broke around Optuna's bookkeeping: ``why`` an interruption
    (its parameters run again under the ticket), else a counted failure with ``reason``. A
    trial it left RUNNING is failed here, saying which (so that, should this settle never
    happen, the lease sweep judges it the same way)."""
    trial_id, number = worker.lease.trial_ids()
    params: dict | None = None
    attrs: dict[str, object] = (
        {TrialAttr.INTERRUPTED: "storage failed around the trial"}
        if why
        else {TrialAttr.FAIL_REASON: "error", TrialAttr.ERROR: reason}
    )
    if trial_id is not None:
        try:
            params = worker._db(_fail_if_running, worker.storage, trial_id, attrs, attempts=worker._patient())
        except Exception:
            log.exception("worker %s: could not fail trial %s; the lease sweep will", worker.id, number)
    if why is None:
        return TrialOutcome.failed(reason, trial_id, number)
    return TrialOutcome.interrupted(why, trial_id, number, params=params)


def _fail_if_running(storage: optuna.storages.BaseStorage, trial_id: int, attrs: dict) -> dict:
    """Fail this worker's own RUNNING trial with ``attrs``; returns its parameters."""
    trial = storage.get_trial(trial_id)
    if trial.state == TS.RUNNING:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)
            storage.set_trial_state_values(trial_id, TS.FAIL)
    return trial.params


def _still_held(worker: WorkerBase, claim: queue.Claim) -> bool:
    try:
        return worker._with_session(lambda s: queue.holds(s, claim.ticket_id, worker.id), attempts=3) != LeaseState.LOST
    except Exception:
        return True  # unknown: settle finds out


def _trial_started(worker: WorkerBase, claim: queue.Claim, trial: optuna.Trial) -> None:
    """The trial exists: record it on the ticket before it trains (a trial that finishes is
    then never run again under this ticket), or stop here if the ticket is no longer ours."""
    logs.bind(trial=trial.number)
    trial_id = optuna_compat.trial_id(trial)
    worker.lease.show(trial_id, trial.number)  # the heartbeat shows it
    ours = worker._with_session(
        lambda s: queue.start_trial(s, claim, worker.id, trial_id=trial_id, trial_number=trial.number)
    )
    if not ours:
        worker.lease.lost()
        raise Interrupted("the ticket was no longer this worker's when its trial started")
    if claim.retry_of is not None:  # the dashboard and the trials list show where it came from
        worker._db(trial.set_user_attr, TrialAttr.RETRY_OF, claim.retry_of)
    elif claim.params:
        worker._db(trial.set_user_attr, TrialAttr.INITIAL, True)


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


def log_outcome(worker_id: str, claim: queue.Claim, outcome: TrialOutcome, settled: queue.Settled) -> None:
    number = outcome.trial_number
    if not settled.held:
        log.info("worker %s: ticket %d was no longer ours; nothing settled", worker_id, claim.ticket_id)
    elif outcome.finished:
        log.info("worker %s: trial %s %s value=%s", worker_id, number, outcome.kind, outcome.value)
    elif outcome.kind == Outcome.INTERRUPTED:
        log.info("worker %s: trial %s stopped (%s)", worker_id, number, outcome.interruption)
    else:
        log.warning("worker %s: trial %s %s: %s", worker_id, number, outcome.kind, outcome.reason)
    if settled.study in (StudyState.FAILED,) and not outcome.finished:
        log.error("worker %s: study %s failed", worker_id, claim.study_name)


def retire_unrun_retries(worker: WorkerBase, claim: queue.Claim) -> None:
    """The study's last trial ticket is spent, so no ticket will run another trial of it.
    A trial still WAITING (queued outside rnntune, from a writable dashboard or an older
    version's retry copy) will never run, and a trial still RUNNING belongs to no ticket
    (its worker died between Optuna's ``ask`` and recording it on the ticket, before any
    training). Fail them, saying why, rather than leave them for ever."""
    study = worker._studies.get(claim.study_key)
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
                worker.storage.set_trial_user_attr(optuna_compat.trial_id(t), TrialAttr.NOT_RUN, why)
                worker.storage.set_trial_state_values(optuna_compat.trial_id(t), TS.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished meanwhile
            log.info("worker %s: trial %d not run: %s", worker.id, t.number, why)
    except TRANSIENT_ERRORS:
        log.warning("worker %s: could not retire waiting retries of %s", worker.id, study.study_name)
