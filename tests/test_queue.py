"""The trial queue under failure, on real PostgreSQL with real worker subprocesses.

Heartbeat 1 s, grace 3 s, lease 5 s (tests/queue_helpers.FAST_ENV), so a dead worker is noticed
within seconds. Every test ends with the budget exact: ``n_trials`` finished trials, unique
numbers, no trial RUNNING or WAITING.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import wait_for
from tests.queue_helpers import TS, Env, cpu_hog, kill9, spec, stop

pytestmark = pytest.mark.slow


def test_kill9_mid_epoch_retries_same_params_on_another_worker(env):
    # Trials of 30 epochs: the one caught mid-training still runs seconds later, when the worker
    # row shows it and the kill lands (a trial of 4 epochs could finish in between: a test race).
    name = env.create(spec("kill-one", n_trials=3, max_epochs=30, n_series=400, hidden=32))
    a = env.worker()
    victim = env.wait_mid_trial(name)
    # rnntune_workers shows the worker busy on that very trial (the heartbeat writes it)
    busy = wait_for(lambda: env.workers(trial_number=victim.number), 10, 0.2, "the worker row to show the trial")
    assert busy[0]["state"] == "busy" and busy[0]["study"] == name and busy[0]["pid"] == a.pid
    kill9(a)
    killed_at = time.monotonic()
    (victim,) = env.running(name)  # the trial the kill interrupted, whichever it is
    b = env.worker()
    try:
        # Within a lease plus one housekeeping claim (and b's start-up), the dead trial is FAIL ...
        wait_for(
            lambda: any(t.number == victim.number and t.state == TS.FAIL for t in env.trials(name)), 30, 0.2, "FAIL"
        )
        assert time.monotonic() - killed_at < 5 + 2 + 10  # lease + housekeeping period + a loaded start-up
        # ... the killed worker, silent for a lease period, is reported lost
        wait_for(lambda: env.workers(pid=a.pid, state="lost"), 15, 0.2, "the killed worker to be reported lost")
        env.wait_state(name, ("done",), 120)
    finally:
        assert stop(b) == [0]
    # b deregistered: listed only with include_stopped
    assert not env.workers(pid=b.pid) and env.workers(pid=b.pid, state="stopped", include_stopped=True)
    trials = env.assert_exact_budget(name, 3)
    # ... and its retry, with identical parameters, completed on the other worker.
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params and retries[0].state == TS.COMPLETE


def test_kill9_every_worker_then_new_ones_finish_the_study(env):
    name = env.create(spec("kill-all", n_trials=4, max_epochs=3, n_series=500, hidden=32))
    first = [env.worker(), env.worker()]
    env.wait_mid_trial(name)
    for p in first:
        kill9(p)
    second = [env.worker(), env.worker()]
    try:
        env.wait_state(name, ("done",), 150)
    finally:
        assert stop(*second) == [0, 0]
    env.assert_exact_budget(name, 4)
    assert all(t["state"] in ("done",) for t in env.tickets(name) if t["kind"] == "trial")


def test_slow_but_alive_worker_is_never_failed(env):
    # Epochs last longer than the 2 s lease while a second process saturates a core: the lease is
    # renewed from the heartbeat thread while training holds the main one.
    hog = cpu_hog()
    name = env.create(spec("slow", n_trials=1, max_epochs=2, n_series=5000, hidden=64))
    w = env.worker(env={"RNNTUNE_LEASE_S": "2"})
    try:
        env.wait_state(name, ("done",), 150)
    finally:
        stop(w)
        hog.kill()
    trials = env.assert_exact_budget(name, 1)
    assert all(t.state == TS.COMPLETE for t in trials)
    epoch_s = max(t.user_attrs["train_seconds"] / t.user_attrs["epochs"] for t in trials)
    assert epoch_s > 2, f"epochs took {epoch_s:.1f}s: not longer than the lease, the test proves nothing"


def test_eight_workers_trivial_trials_no_double_claims(env):
    n = 40
    name = env.create(spec("eight", n_trials=n, max_epochs=1, n_series=6, hidden=2))
    workers = [env.worker() for _ in range(8)]
    try:
        env.wait_state(name, ("done",), 180)
    finally:
        codes = stop(*workers)
    assert codes == [0] * 8
    env.assert_exact_budget(name, n)
    tickets = [t for t in env.tickets(name) if t["kind"] == "trial"]
    assert len(tickets) == n and all(t["state"] == "done" and t["attempts"] == 1 for t in tickets)
    numbers = [t["trial_number"] for t in tickets]
    assert len(set(numbers)) == n, "a trial was recorded against two tickets"
    assert len({t["worker_id"] for t in tickets}) >= 2


def test_sigterm_mid_trial_exits_0_fast_and_trial_is_retried(env):
    name = env.create(spec("sigterm", n_trials=2, max_epochs=30, n_series=400, hidden=32))
    a = env.worker()
    victim = env.wait_mid_trial(name)
    t0 = time.monotonic()
    assert stop(a, timeout_s=10) == [0]
    assert time.monotonic() - t0 < 5, "SIGTERM must stop the worker within a batch, not an epoch"
    stopped = next(t for t in env.trials(name) if t.number == victim.number)
    assert stopped.state == TS.FAIL and stopped.user_attrs["interrupted"].startswith("worker stopped")
    # what GET /v1/studies shows: a clean stop is an interruption, not a failure
    assert env.summary(name)["counts"] | {"complete": 0} == {
        "complete": 0, "pruned": 0, "failed": 0, "interrupted": 1, "running": 0, "waiting": 0
    }  # fmt: skip
    b = env.worker()
    try:
        env.wait_state(name, ("done",), 120)
    finally:
        assert stop(b) == [0]
    trials = env.assert_exact_budget(name, 2)
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state == TS.COMPLETE


def test_failure_budget_stops_study_and_worker_survives(env):
    # A worker whose training always raises (tests/fault_worker.py).
    name = env.create(spec("broken", n_trials=10, budget={"max_failed_trials": 3}))
    w = env.faulty_worker()
    try:
        env.wait_state(name, ("failed",), 90)
        state, reason = env.study_state(name)
        assert "max_failed_trials=3" in reason and "injected training failure" in reason
        failed = [t for t in env.trials(name) if t.state == TS.FAIL]
        assert len(failed) == 3
        assert all(t.user_attrs["error"].startswith("RuntimeError: injected training failure") for t in failed)
        assert all(t["state"] == "cancelled" for t in env.tickets(name) if t["state"] != "done")
        # The worker is alive and takes the next study (whose trials fail too: it is that worker).
        other = env.create(spec("after-broken", n_trials=1, max_epochs=1, budget={"max_failed_trials": 1}))
        env.wait_state(other, ("failed",), 60)
        assert w.poll() is None
    finally:
        assert stop(w) == [0]


def test_diverged_trial_fails_with_reason_diverged(env):
    name = env.create(
        spec(
            "diverge",
            n_trials=1,
            max_epochs=3,
            model={"cell": "rnn", "hidden_size": 64},
            training={"optimizer": "sgd", "lr": 10.0},
            search_space={"batch_size": {"type": "categorical", "choices": [16]}},
            budget={"max_failed_trials": 1},
        )
    )
    w = env.worker()
    try:
        env.wait_state(name, ("failed",), 90)
    finally:
        assert stop(w) == [0]
    (trial,) = env.trials(name)
    assert trial.state == TS.FAIL and trial.user_attrs["fail_reason"] == "diverged"


def test_pause_resume_and_cancel(env):
    # Trials of 30 epochs: the heartbeat (every 1.25 s) sees the pause while a trial still runs.
    paused = env.create(spec("pausing", n_trials=3, max_epochs=30, n_series=400, hidden=32))
    w = env.worker()
    try:
        from rnntune.service import queue
        from rnntune.service.studies import registry

        env.wait_mid_trial(paused)
        with env.sessions() as s:
            queue.pause_study(s, registry.get_study(s, paused).id)
        wait_for(lambda: not env.running(paused), 15, 0.2, "running trials to stop after pause")
        assert env.study_state(paused)[0] == "paused"
        time.sleep(2)
        assert not env.running(paused), "a paused study started a trial"
        with env.sessions() as s:
            queue.resume_study(s, registry.get_study(s, paused).id)
        env.wait_state(paused, ("done",), 120)
        trials = env.assert_exact_budget(paused, 3)
        # the trial the pause stopped (not always the one seen mid-training: that one may finish
        # first) says so, and its retry ran its parameters
        (stopped,) = [t for t in trials if t.state == TS.FAIL]
        assert stopped.user_attrs["interrupted"].startswith("study paused"), stopped.user_attrs
        assert any(t.user_attrs.get("retry_of") == stopped.number and t.params == stopped.params for t in trials)

        cancelled = env.create(spec("cancelling", n_trials=5, max_epochs=30, n_series=400, hidden=32))
        env.wait_mid_trial(cancelled)
        with env.sessions() as s:
            queue.cancel_study(s, registry.get_study(s, cancelled).id)
        wait_for(lambda: not env.running(cancelled), 15, 0.2, "running trials to stop after cancel")
        n_before = len(env.trials(cancelled))
        time.sleep(2)
        assert len(env.trials(cancelled)) == n_before, "a cancelled study started a trial"
        assert env.study_state(cancelled) == ("cancelled", "cancelled by request")
        assert all(t["state"] in ("done", "cancelled") for t in env.tickets(cancelled))
    finally:
        assert stop(w) == [0]


def test_max_parallel_is_never_exceeded(env):
    name = env.create(spec("capped", n_trials=6, max_epochs=2, n_series=300, hidden=16, budget={"max_parallel": 2}))
    workers = [env.worker() for _ in range(4)]
    peak = 0
    try:
        deadline = time.monotonic() + 150
        while env.study_state(name)[0] != "done":
            assert time.monotonic() < deadline, "study did not finish"
            leased = sum(t["state"] == "leased" and t["kind"] == "trial" for t in env.tickets(name))
            peak = max(peak, leased, len(env.running(name)))
            time.sleep(0.1)
    finally:
        stop(*workers)
    assert peak == 2, f"peak running {peak}"
    env.assert_exact_budget(name, 6)


# --- database faults ----------------------------------------------------------------------------

PG_BIN = (
    Path("/usr/lib/postgresql")
    / (os.listdir("/usr/lib/postgresql")[0] if Path("/usr/lib/postgresql").is_dir() else "15")
    / "bin"
)


class PrivateCluster:
    """A throwaway PostgreSQL cluster this test may restart (the shared server is never touched)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="rnntune-pg-", dir="/tmp"))
        os.chmod(self.dir, 0o777)
        shutil.chown(self.dir, "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._pg("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        self.opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.dir / "data"), "-o", self.opts, "-l", str(self.dir / "log"), "-w", "start")
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        # No pipes: a postmaster started by pg_ctl would hold them open and hang the call.
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def restart(self) -> None:
        self._pg(
            "pg_ctl",
            "-D",
            str(self.dir / "data"),
            "-o",
            self.opts,
            "-l",
            str(self.dir / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def close(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def test_killed_connections_mid_trial_do_not_lose_the_study(env):
    name = env.create(spec("terminated", n_trials=4, max_epochs=4, n_series=400, hidden=32))
    w = env.worker()
    admin = sa.create_engine(env.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    db = env.url.rsplit("/", 1)[1]
    try:
        env.wait_mid_trial(name)
        killed = 0
        for _ in range(5):  # terminate every connection of that database, again and again
            with admin.connect() as c:
                killed += c.execute(
                    sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": db},
                ).scalar()
            time.sleep(0.7)
        assert killed > 0
        env.engine.dispose()  # the test's own pool lost its connections too
        env.wait_state(name, ("done",), 150)
        assert w.poll() is None, "the worker crashed"
    finally:
        assert stop(w) == [0]
        admin.dispose()
    env.assert_exact_budget(name, 4)


def test_postgres_restart_mid_study_completes():
    cluster = PrivateCluster()
    e = Env(cluster.url)
    try:
        name = e.create(spec("restart", n_trials=4, max_epochs=4, n_series=400, hidden=32))
        w = e.worker()
        try:
            e.wait_mid_trial(name)
            e.engine.dispose()
            cluster.restart()
            e.engine.dispose()
            e.wait_state(name, ("done",), 150)
            assert w.poll() is None, "the worker crashed"
        finally:
            assert stop(w) == [0]
        trials = e.assert_exact_budget(name, 4)
        assert all(
            t.state != TS.FAIL
            or t.user_attrs.get("interrupted")
            or any(r.user_attrs.get("retry_of") == t.number for r in trials)
            for t in trials
        ), "a trial failed by the restart was not retried"
    finally:
        e.close()
        cluster.close()
