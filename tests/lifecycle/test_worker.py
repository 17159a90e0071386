"""A worker never dies of a race: every exception type injected at every seam between claim and
settle (and in the heartbeat and the lease sweep) is a counted, reasoned outcome or a retried
transient, and the study still ends with exactly ``n_trials`` finished. In-process workers (threads)
on real PostgreSQL; the faults wrap the seams from outside."""

from __future__ import annotations

import functools
import threading
import time

import optuna
import pytest
import sqlalchemy as sa

from rnntune.service import queue
from rnntune.service.store import db
from rnntune.service.trials.objective import Objective
from rnntune.service.worker import Worker
from tests.conftest import wait_for
from tests.queue_helpers import TS, Env, Running, check_lifecycle, spec

pytestmark = [pytest.mark.slow, pytest.mark.shared_database]


def _exceptions() -> list[BaseException]:
    return [
        RuntimeError("injected"),
        KeyError("injected"),
        optuna.exceptions.UpdateFinishedTrialError("injected"),
        optuna.exceptions.StorageInternalError("injected"),  # transient: retried
        queue.LifecycleError("injected"),
    ]


class Inject:
    """Raises each exception of ``exceptions`` in turn, one per hit of the seam it wraps."""

    def __init__(self, exceptions: list[BaseException]):
        self.pending = list(exceptions)
        self.fired: list[str] = []
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if not self.pending:
                return
            exc = self.pending.pop(0)
            self.fired.append(type(exc).__name__)
        raise exc

    def wrap(self, monkeypatch, owner, name: str, *, after: bool = False, when=lambda *a, **k: True) -> None:
        real = getattr(owner, name)

        @functools.wraps(real)
        def wrapped(*args, **kwargs):
            if not after and when(*args, **kwargs):
                self()
            out = real(*args, **kwargs)
            if after and when(*args, **kwargs):
                self()
            return out

        monkeypatch.setattr(owner, name, wrapped)


def _worker(env: Env, tmp_path, **kwargs) -> Worker:
    settings = env.settings.model_copy(update={"lease_s": 3.0, "poll_interval_s": 0.2, "data_dir": tmp_path})
    return Worker(settings, threads=1, **kwargs)


def _finishing(*args, **kwargs) -> bool:
    state = kwargs.get("state", args[2] if len(args) > 2 else None)
    return state in (TS.COMPLETE, TS.PRUNED, TS.FAIL)


def _install(seam: str, inject: Inject, monkeypatch) -> dict:
    """Wrap ``seam``; returns Worker keyword arguments the seam needs."""
    where = {
        "claim": (queue, "claim", False),
        "claim-committed": (queue, "claim", True),
        "spec": (Worker, "_spec", False),
        "study": (Worker, "_study", False),
        "start": (queue, "start_trial", False),
        "report": (optuna.trial.Trial, "report", False),
        "settle": (queue, "settle", False),
        "settle-committed": (queue, "settle", True),
        "renew": (queue, "renew", False),
        "sweep": (queue.tickets, "requeue_expired", False),  # where claim looks it up
    }
    if seam == "objective":

        def factory(*args, **kwargs):
            inject()
            return Objective(*args, **kwargs)

        return {"objective_factory": factory}
    if seam == "tell":
        inject.wrap(monkeypatch, db.ResilientRDBStorage, "set_trial_state_values", when=_finishing)
        return {}
    owner, name, after = where[seam]
    inject.wrap(monkeypatch, owner, name, after=after)
    return {}


SEAMS = [
    "claim",
    "claim-committed",
    "spec",
    "study",
    "objective",
    "start",
    "report",
    "tell",
    "settle",
    "settle-committed",
    "renew",
    "sweep",
]


@pytest.mark.parametrize("seam", SEAMS)
def test_a_worker_survives_every_error_at_every_seam(env, tmp_path, monkeypatch, seam):
    name = env.create(
        spec(f"seam-{seam}", n_trials=4, max_epochs=2, n_series=6, hidden=2, budget={"max_failed_trials": 50})
    )
    if seam == "renew":  # renewals come every lease/4 while a trial trains: epochs of a second
        report = optuna.trial.Trial.report
        monkeypatch.setattr(optuna.trial.Trial, "report", lambda *a, **k: (time.sleep(1.0), report(*a, **k))[1])
    inject = Inject(_exceptions())
    running = Running(_worker(env, tmp_path, **_install(seam, inject, monkeypatch)))
    try:
        env.wait_state(name, ("done",), 120)
        wait_for(lambda: not inject.pending, 30, 0.2, f"every exception injected at {seam}")
        assert running.alive(), f"the worker died of {running.error!r}"
    finally:
        monkeypatch.undo()
        assert running.stop() == 0
    assert inject.fired == [type(e).__name__ for e in _exceptions()]
    env.assert_exact_budget(name, 4)
    check_lifecycle(env, name, trial_less_failures=len(inject.fired))


def _held_trial(env: Env, name: str, worker: str) -> tuple[optuna.Study, optuna.Trial]:
    """A ticket of ``name`` claimed by ``worker`` with a lease of half a second, and the trial it
    started (its parameters drawn), as a worker leaves them when it is lost mid-trial."""
    with env.sessions() as s:
        claim = queue.claim(s, worker, labels=set(), lease_s=0.5)
    study = optuna.load_study(study_name=name, storage=env.storage)
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    with env.sessions() as s:
        assert queue.start_trial(s, claim, worker, trial_id=trial._trial_id, trial_number=trial.number)
    return study, trial


def test_two_workers_meet_a_lost_trial_while_something_else_fails_it(env, tmp_path, monkeypatch):
    """The race of a fresh-clone CI run: a dead holder's trial is RUNNING behind an expired lease;
    two workers start at once, and the trial is failed by another process (Optuna's stale-trial
    check, before) just after a worker read it. No worker dies; the study ends with its exact
    budget, and the lost trial's parameters ran again once."""
    name = env.create(spec("lost-race", n_trials=3, max_epochs=1, n_series=6, hidden=2))
    _, dead = _held_trial(env, name, "w-dead")
    time.sleep(1.0)  # its lease has expired

    real_get_trial = db.ResilientRDBStorage.get_trial

    def get_trial(self, trial_id):
        """A read of the dead trial, then another process fails it under the reader."""
        out = real_get_trial(self, trial_id)
        if trial_id == dead._trial_id and out.state == TS.RUNNING:
            with env.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE trials SET state = 'FAIL' WHERE trial_id = :t AND state = 'RUNNING'"),
                    {"t": trial_id},
                )
        return out

    monkeypatch.setattr(db.ResilientRDBStorage, "get_trial", get_trial)
    workers = [Running(_worker(env, tmp_path / str(i))) for i in range(2)]
    try:
        env.wait_state(name, ("done",), 120)
        assert all(w.alive() for w in workers), [repr(w.error) for w in workers]
    finally:
        monkeypatch.undo()
        assert [w.stop() for w in workers] == [0, 0]
    trials = env.assert_exact_budget(name, 3)
    retries = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
    assert len(retries) == 1 and retries[0].params == dead.params, [t.user_attrs for t in trials]
    check_lifecycle(env, name)


def test_a_lost_lease_retries_the_same_parameters(env, tmp_path):
    """A worker lost its lease mid-trial (the database was away for a lease period): it stopped the
    trial, and Optuna recorded it FAIL, before the sweep came. The ticket's next trial runs the
    same parameters, as after a death."""
    name = env.create(spec("lost-lease", n_trials=1, max_epochs=1, n_series=6, hidden=2))
    study, lost = _held_trial(env, name, "w-cut-off")
    # what the objective does when the heartbeat finds the lease lost (Objective._interrupted)
    lost.set_user_attr("interrupted", "stopped at epoch 1")
    study.tell(lost, state=TS.FAIL)
    time.sleep(1.0)
    running = Running(_worker(env, tmp_path))
    try:
        env.wait_state(name, ("done",), 60)
    finally:
        assert running.stop() == 0
    (done,) = [t for t in env.trials(name) if t.state == TS.COMPLETE]
    assert done.params == lost.params and done.user_attrs["retry_of"] == lost.number
    assert env.summary(name)["counts"]["failed"] == 0
    check_lifecycle(env, name)
