"""Helpers for the queue tests: studies created in-process, real worker subprocesses, and
inspection straight from the database (ours and Optuna's tables)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import optuna
import sqlalchemy as sa
from sqlalchemy import select

from rnntune.service import queue
from rnntune.service.config import Settings
from rnntune.service.queue import ACTIVE
from rnntune.service.spec import parse_spec
from rnntune.service.store.db import init_db, make_engine, make_storage, session_factory
from rnntune.service.store.tables import StudyRow, StudyState
from rnntune.service.studies import registry
from rnntune.service.worker import Worker
from tests.conftest import REPO, rnntune, wait_for
from tests.factories import sine_study as spec  # noqa: F401  (the queue tests' spec)

TS = optuna.trial.TrialState
FINISHED = (TS.COMPLETE, TS.PRUNED)

# Short but safe: a lease of 5 s is renewed every 1.25 s.
FAST_ENV = {
    "RNNTUNE_LEASE_S": "5",
    "RNNTUNE_POLL_INTERVAL_S": "0.3",
}


@dataclass
class Env:
    url: str

    def __post_init__(self):
        self.settings = Settings(
            database_url=self.url, **{k.removeprefix("RNNTUNE_").lower(): v for k, v in FAST_ENV.items()}
        )
        self.engine = make_engine(self.settings)
        init_db(self.engine)
        self.sessions = session_factory(self.engine)
        self.storage = make_storage(self.settings)

    def create(self, spec_dict: dict) -> str:
        with self.sessions() as s:
            registry.create_study(s, self.storage, parse_spec(spec_dict))
        return spec_dict["name"]

    def worker(self, *args: str, **kwargs) -> subprocess.Popen:
        env = {"RNNTUNE_DATABASE_URL": self.url, **FAST_ENV, **kwargs.pop("env", {})}
        return rnntune("worker", "--threads", "1", *args, env=env, **kwargs)

    def faulty_worker(
        self, faults: str = "", *args: str, training: str | None = "raise", **env: str
    ) -> subprocess.Popen:
        """A real worker with faults injected (tests/fault_worker.py): ``faults`` is its
        ``RNNTUNE_FAULTS``; by default its every training run raises."""
        import sys

        extra = {"RNNTUNE_FAULTS": faults, **({"RNNTUNE_FAULT_TRAINING": training} if training else {})}
        full = {**os.environ, "RNNTUNE_DATABASE_URL": self.url, **FAST_ENV, "PYTHONPATH": str(REPO), **extra, **env}
        return subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_worker.py"), *args], env=full)

    def summary(self, name: str) -> dict:
        """The study as GET /v1/studies lists it (registry.summaries)."""
        with self.sessions() as s:
            (out,) = registry.summaries(s, [registry.get_study(s, name)])
        return out.model_dump()

    def study_row(self, name: str) -> dict:
        with self.engine.connect() as c:
            return dict(c.execute(sa.text("SELECT * FROM rnntune_studies WHERE name=:n"), {"n": name}).one()._mapping)

    def study_state(self, name: str) -> tuple[str, str | None]:
        with self.engine.connect() as c:
            return tuple(
                c.execute(sa.text("SELECT state, reason FROM rnntune_studies WHERE name=:n"), {"n": name}).one()
            )

    def trials(self, name: str) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=name, storage=self.storage).get_trials(deepcopy=False)

    def tickets(self, name: str) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.text(
                    "SELECT t.* FROM rnntune_tickets t JOIN rnntune_studies s ON s.id = t.study_id "
                    "WHERE s.name = :n ORDER BY t.seq"
                ),
                {"n": name},
            )
            return [dict(r._mapping) for r in rows]

    def workers(self, include_stopped: bool = False, **match) -> list[dict]:
        """GET /v1/workers's rows (rnntune.service.queue.list_workers) whose fields equal ``match``."""
        with self.sessions() as s:
            rows = queue.list_workers(s, lost_after_s=self.settings.lease_s, include_stopped=include_stopped)
        return [w for w in rows if all(w[k] == v for k, v in match.items())]

    def running(self, name: str) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.trials(name) if t.state == TS.RUNNING]

    def wait_state(self, name: str, states: tuple[str, ...], timeout_s: float) -> str:
        return wait_for(
            lambda: (st := self.study_state(name)[0]) in states and st, timeout_s, 0.3, f"{name} to be {states}"
        )

    def wait_mid_trial(self, name: str, timeout_s: float = 60, min_epochs: int = 1) -> optuna.trial.FrozenTrial:
        """A RUNNING trial that has reported at least ``min_epochs`` epochs."""

        def found():
            for t in self.running(name):
                if len(t.intermediate_values) >= min_epochs:
                    return t
            return None

        return wait_for(found, timeout_s, 0.2, f"a trial of {name} mid-training")

    def assert_exact_budget(self, name: str, n_trials: int) -> list[optuna.trial.FrozenTrial]:
        trials = self.trials(name)
        finished = [t for t in trials if t.state in FINISHED]
        states = [t.state.name for t in trials]
        assert len(finished) == n_trials, states
        assert TS.RUNNING not in {t.state for t in trials}, states
        assert TS.WAITING not in {t.state for t in trials}, states
        assert len({t.number for t in trials}) == len(trials)
        for t in finished:
            assert t.intermediate_values, f"trial {t.number} has no per-epoch values"
        return trials

    def close(self):
        self.engine.dispose()
        self.storage.remove_session()


def end_active_studies(env: Env) -> Env:
    """``env``'s database with the studies of earlier tests ended (a claim takes any study)."""
    with env.sessions() as s:
        active = s.scalars(select(StudyRow.id).where(StudyRow.state.in_((*ACTIVE, StudyState.PAUSED)))).all()
        for study_id in active:
            queue.cancel_study(s, study_id)
    return env


def stop(*procs: subprocess.Popen, sig=signal.SIGTERM, timeout_s: float = 30) -> list[int]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    return [p.wait(timeout=timeout_s) for p in procs]


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def cpu_hog() -> subprocess.Popen:
    """A process that keeps one core busy."""
    import sys

    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def timed(fn, *args):
    t0 = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t0


def counted_failures(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The FAIL trials that a study's ``n_failed`` must count: neither retried (a copy carries
    its parameters on), nor interrupted (stopped by a pause, a shutdown or a cancel), nor a
    retry copy that the spent budget never ran."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [
        t
        for t in trials
        if t.state == TS.FAIL
        and t.number not in retried
        and "interrupted" not in t.user_attrs
        and "not_run" not in t.user_attrs
    ]


def retry_line(trial: optuna.trial.FrozenTrial, by_number: dict) -> list[int]:
    """The numbers of ``trial``'s retry line, itself first: its original, that one's, …"""
    line = [trial.number]
    while (original := by_number[line[-1]].user_attrs.get("retry_of")) is not None:
        line.append(original)
    return line


def check_lifecycle(env: Env, name: str, *, max_retries: int = 2, trial_less_failures: int = 0) -> None:
    """The lifecycle's invariants for a study whose workers are all gone: exactly ``n_trials``
    finished (when it is done, not timed out), no ticket settled twice, nothing RUNNING or leased, the deaths
    of every trial within the retry cap, ``n_failed`` equal to the failed trials (plus at most
    ``trial_less_failures`` counted before a trial existed), every retry
    with its original parameters."""
    study = env.study_row(name)
    trials = env.trials(name)
    by_number = {t.number: t for t in trials}
    states = [t.state.name for t in trials]
    tickets = [t for t in env.tickets(name) if t["kind"] == "trial"]
    assert TS.RUNNING not in {t.state for t in trials}, states
    assert TS.WAITING not in {t.state for t in trials} or study["state"] not in ("done",), states
    assert not [t for t in env.tickets(name) if t["state"] in ("leased", "running")], "a ticket is still held"
    finished = [t for t in trials if t.state in FINISHED]
    if study["state"] == "done" and not study["reason"]:  # not cut short by budget.timeout_s
        assert len(finished) == study["n_trials"], (study["n_trials"], states)
        assert all(t["state"] == "done" for t in tickets), [t["state"] for t in tickets]
    else:
        assert len(finished) <= study["n_trials"], (study["n_trials"], states)
    # no ticket settled twice: each finished trial is one done ticket's, and each done ticket one trial's
    done_numbers = [t["trial_number"] for t in tickets if t["state"] == "done"]
    assert len(done_numbers) == len(set(done_numbers)), done_numbers
    assert sorted(done_numbers) == sorted(t.number for t in finished), (done_numbers, states)
    for t in trials:
        assert len(retry_line(t, by_number)) <= max_retries + 1, f"trial {t.number} retried too often"
        original = t.user_attrs.get("retry_of")
        if original is not None and by_number[original].params:  # (one that died before drawing any draws anew)
            assert t.params == by_number[original].params, f"retry {t.number} of {original} changed parameters"
    failed = counted_failures(trials)
    # (up to ``trial_less_failures`` more: errors counted before any trial existed, e.g. a spec
    # that no longer loads, have no FAIL trial to show)
    counted = (study["n_failed"], [t.number for t in failed], states)
    assert len(failed) <= study["n_failed"] <= len(failed) + trial_less_failures, counted


class Running:
    """``worker.run()`` in a thread of this process; ``result`` is what it returned, ``error`` what
    ended it, if anything did."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.result: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.worker.run()
        except BaseException as exc:
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> int | None:
        self.worker.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, f"the worker died of {self.error!r}"
        return self.result
