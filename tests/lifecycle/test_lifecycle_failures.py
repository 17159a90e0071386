"""The ticket lifecycle's failures of issue 13, one test each, on real PostgreSQL with real worker
processes whose faults tests/fault_worker.py injects (lease 5 s).

Each test ends with the lifecycle's invariants (tests/queue_helpers.check_lifecycle).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import optuna
import pytest
import sqlalchemy as sa

from rnntune.service import queue
from rnntune.service.spec import SpecError, parse_spec
from rnntune.service.store import migrate
from rnntune.service.store.attrs import StudyAttr
from rnntune.service.studies import registry
from tests.conftest import create_pg_database, drop_pg_database, rnntune, wait_for
from tests.queue_helpers import TS, check_lifecycle, spec, stop

pytestmark = pytest.mark.slow
FAULT_EXIT = 17  # tests/fault_worker.EXIT_CODE
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"  # apt's faketime (scripts/test.sh)


def _tiny(name: str, n_trials: int, **extra) -> dict:
    return spec(name, n_trials=n_trials, max_epochs=1, n_series=6, hidden=2, **extra)


# 1. budget overrun ---------------------------------------------------------------------------


def test_death_after_tell_does_not_run_the_budget_over(env):
    """The worker dies right after Optuna's COMPLETE commit, before its ticket is settled: the
    ticket knows its trial, so housekeeping marks it done instead of starting a third trial."""
    name = env.create(_tiny("tell-exit", 2))
    a = env.faulty_worker("tell:after:exit", training=None)
    assert a.wait(timeout=60) == FAULT_EXIT
    b = env.worker()
    try:
        env.wait_state(name, ("done",), 60)
    finally:
        assert stop(b) == [0]
    env.assert_exact_budget(name, 2)
    check_lifecycle(env, name)


def test_lost_ack_of_tell_does_not_run_the_budget_over(env):
    """Optuna's COMPLETE commit succeeds but its acknowledgement is lost (a storage error after
    the commit): settle consults the trial and spends the ticket."""
    name = env.create(_tiny("tell-raise", 2))
    w = env.faulty_worker("tell:after:raise", training=None)
    try:
        env.wait_state(name, ("done",), 60)
    finally:
        assert stop(w) == [0]
    env.assert_exact_budget(name, 2)
    check_lifecycle(env, name)


# 2. retry cap for deaths -----------------------------------------------------------------------


def _die_in_turn(env, name: str, fault: str, end: str) -> list[int]:
    """Faulty workers (max_retries=2), one after another, until the study is ``end``: their
    exit codes."""
    exits = []
    for _ in range(5):
        w = env.faulty_worker(fault, training=None, RNNTUNE_MAX_RETRIES="2")
        ended = lambda w=w: w.poll() is not None or env.study_state(name)[0] == end  # noqa: E731
        wait_for(ended, 60, 0.3, f"the worker to die or the study to be {end}")
        exits.append(w.returncode if w.poll() is not None else stop(w)[0])
        if env.study_state(name)[0] == end:
            break
    env.wait_state(name, (end,), 30)
    return exits


def test_worker_deaths_are_capped_and_counted(env):
    """Workers die in turn inside training (max_retries=2): the third death of the trial's line
    fails it, counted toward max_failed_trials, with the reason; the study does not loop."""
    name = env.create(spec("deaths", n_trials=1, max_epochs=3, n_series=6, hidden=2, budget={"max_failed_trials": 1}))
    exits = _die_in_turn(env, name, "report:after:exit", "failed")
    state, reason = env.study_state(name)
    assert "worker lost 3 times on this trial; last: lease expired" in reason, reason
    assert exits[:3] == [FAULT_EXIT] * 3, exits
    assert len(exits) == 4, f"{len(exits)} workers were needed: the fourth's lease sweep judges the third death"
    (ticket,) = env.tickets(name)
    # judged by the sweep under the study's lock: nobody claims the ticket a fourth time
    assert ticket["attempts"] == 3 and ticket["state"] == "cancelled"
    assert env.study_row(name)["n_failed"] == 1
    check_lifecycle(env, name)


def test_finalize_deaths_are_capped(env):
    """Workers die in turn inside the finalize step (max_retries=2): after three deaths the next
    claim ends the study done, without a model and with the reason, instead of handing the step
    to a fourth worker to die in."""
    name = env.create(spec("final-deaths", n_trials=1, max_epochs=2, n_series=6, hidden=2))
    exits = _die_in_turn(env, name, "finalize:before:exit", "done")
    state, reason = env.study_state(name)
    assert reason and "finalize: worker lost 3 times; last: lease expired" in reason, reason
    assert exits[:3] == [FAULT_EXIT] * 3, exits
    assert len(exits) == 4, f"{len(exits)} workers were needed: the fourth must end the step"
    (final,) = [t for t in env.tickets(name) if t["kind"] == "finalize"]
    assert final["attempts"] == 4 and final["state"] == "done"
    check_lifecycle(env, name)


# 3. retry storm --------------------------------------------------------------------------------


def test_errors_outside_training_are_counted_and_backed_off(env):
    """The Optuna study is deleted under a queued study: every claim breaks outside training.
    Each is a counted failure, the worker backs off, and max_failed_trials ends the study."""
    name = env.create(_tiny("storm", 5, budget={"max_failed_trials": 3}))
    optuna.delete_study(study_name=name, storage=env.storage)
    w = env.worker()
    try:
        env.wait_state(name, ("failed",), 40)
        time.sleep(2)
        assert w.poll() is None, "the worker died"
    finally:
        assert stop(w) == [0]
    state, reason = env.study_state(name)
    assert "max_failed_trials=3" in reason and "outside training: KeyError" in reason, reason
    row = env.study_row(name)
    assert row["n_failed"] == 3
    assert sum(t["attempts"] for t in env.tickets(name)) == 3, "claims beyond the counted failures"


# 4. timeout leak -------------------------------------------------------------------------------


def test_a_ticket_back_after_timeout_is_not_claimed_again(env):
    """``timeout_s`` ran out while a ticket was out; housekeeping cancelled the queued ones.
    When that ticket comes back (its worker died: the lease expired) no claim may take it."""
    from rnntune.service import queue

    name = env.create(_tiny("timeout", 3, budget={"timeout_s": 1.5}))
    with env.sessions() as s:
        out = queue.claim(s, "w-dies", labels=set(), lease_s=3)
    assert out is not None
    time.sleep(2)  # past the deadline, within the lease
    with env.sessions() as s:
        assert queue.claim(s, "w-live", labels=set(), lease_s=30) is None
    time.sleep(1.5)  # the lease of w-dies expired: its ticket comes back
    with env.sessions() as s:
        leaked = queue.claim(s, "w-live", labels=set(), lease_s=30)
    assert leaked is None, f"ticket {leaked.seq} claimed after the study's timeout"
    assert env.study_state(name) == ("done", "budget.timeout_s=1.5 reached")
    assert {t["state"] for t in env.tickets(name)} == {"cancelled"}


# 5. atomic create --------------------------------------------------------------------------------


def test_create_adopts_a_trial_less_optuna_study_left_by_a_crash(env):
    """A creator died between ``optuna.create_study`` and our row: the name is not lost."""
    sp = parse_spec(_tiny("orphan", 2, initial_trials=[{"lr": 0.005}]))
    optuna.create_study(storage=env.storage, study_name=sp.name, direction=sp.direction)
    with env.sessions() as s:
        row, created = registry.create_study(s, env.storage, sp)
    assert created and row.n_trials == 2
    assert [t["params"] for t in env.tickets("orphan")] == [{"lr": 0.005}, None]  # the initial trial runs first
    assert env.trials("orphan") == []
    # a second POST of it is the same study
    with env.sessions() as s:
        again, created = registry.create_study(s, env.storage, sp)
    assert not created and again.id == row.id


def test_create_refuses_an_optuna_study_that_ran_trials_or_has_another_spec(env):
    ran = parse_spec(_tiny("foreign", 1))
    study = optuna.create_study(storage=env.storage, study_name=ran.name, direction=ran.direction)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    other = parse_spec(_tiny("half-made", 1))
    half = optuna.create_study(storage=env.storage, study_name=other.name, direction=other.direction)
    half.set_user_attr(StudyAttr.SPEC_HASH, "0" * 64)
    for sp in (ran, other):
        with env.sessions() as s, pytest.raises(registry.StudyConflict):
            registry.create_study(s, env.storage, sp)


# 6. clock skew -----------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", ["-2h", "+2h"])
def test_a_worker_with_a_skewed_clock_keeps_its_tickets_and_takes_nobody_elses(env, offset):
    """One worker's clock is two hours off (far more than a lease): its own leases do not
    expire early (behind), and it does not take the live leases of others (ahead)."""
    assert os.path.exists(FAKETIME_LIB), "the clock-skew test needs faketime (scripts/test.sh installs it)"
    name = env.create(
        spec("skew-ahead" if offset[0] == "+" else "skew-behind", n_trials=4, max_epochs=2, n_series=200, hidden=8)
    )
    skewed_env = {"FAKETIME": offset, "DONT_FAKE_MONOTONIC": "1"}
    skewed = env.worker(env={**skewed_env, "LD_PRELOAD": FAKETIME_LIB})
    normal = env.worker()
    try:
        env.wait_state(name, ("done",), 150)
    finally:
        assert stop(skewed, normal) == [0, 0]
    tickets = [t for t in env.tickets(name) if t["kind"] == "trial"]
    assert all(t["attempts"] == 1 for t in tickets), [(t["seq"], t["attempts"], t["last_error"]) for t in tickets]
    assert not [t for t in tickets if t["last_error"]], [t["last_error"] for t in tickets]
    env.assert_exact_budget(name, 4)
    check_lifecycle(env, name)


# 7. n_failed, sampler errors, migrate race ---------------------------------------------------------


def test_failed_settle_retried_after_lost_ack_counts_once(env):
    """Every training run fails and every first settle's acknowledgement is lost after its
    commit: the retried settle changes nothing, so n_failed counts each failed trial once."""
    name = env.create(_tiny("ack", 6, budget={"max_failed_trials": 3}))
    w = env.faulty_worker("settle:after:raise")
    try:
        env.wait_state(name, ("failed",), 60)
    finally:
        assert stop(w) == [0]
    trials = env.trials(name)
    assert env.study_row(name)["n_failed"] == 3 == len([t for t in trials if t.state == TS.FAIL])
    check_lifecycle(env, name)


@pytest.mark.parametrize("judge", ["api-sweep", "next-worker"])
def test_death_between_a_failed_training_and_its_tell_counts_once(env, judge):
    """A worker's training fails; it records why (``fail_reason``) and dies before Optuna's
    ``tell``, leaving the trial RUNNING. Whichever process runs the lease sweep (the API's
    sweeper or the next worker's housekeeping), the trial is one counted failure and its
    parameters are not run again."""
    name = env.create(_tiny(f"fail-{judge}", 2, budget={"max_failed_trials": 50}))
    a = env.faulty_worker("tell:before:exit", "--max-trials", "1")
    assert a.wait(timeout=60) == FAULT_EXIT
    (dead,) = env.running(name)
    assert dead.user_attrs["fail_reason"] == "error"
    time.sleep(env.settings.lease_s + 0.5)  # past the ticket's lease
    if judge == "api-sweep":  # what the API's sweeper does every few seconds
        with env.sessions() as s:
            assert queue.requeue_expired_now(s) == 1
        assert env.trials(name)[dead.number].state == TS.FAIL
        assert env.study_row(name)["n_failed"] == 1
    b = env.worker()
    try:
        env.wait_state(name, ("done",), 60)
    finally:
        assert stop(b) == [0]
    trials = env.trials(name)
    assert [t.state for t in trials] == [TS.FAIL, TS.COMPLETE, TS.COMPLETE], [t.state.name for t in trials]
    assert not [t for t in trials if t.user_attrs.get("retry_of") == dead.number], "the failure was retried"
    assert env.study_row(name)["n_failed"] == 1
    check_lifecycle(env, name)


def test_a_retry_carries_its_parameters_and_origin_not_the_dead_run(env):
    """A trial whose worker died mid-epoch runs again with its parameters, marked ``retry_of``;
    it carries none of the dead run's outcome attributes, and the dead one counts as interrupted."""
    name = env.create(spec("carry", n_trials=1, max_epochs=3, n_series=6, hidden=2))
    a = env.faulty_worker("report:after:exit", "--max-trials", "1", training=None)
    assert a.wait(timeout=60) == FAULT_EXIT
    (dead,) = env.running(name)
    b = env.worker()
    try:
        env.wait_state(name, ("done",), 90)
    finally:
        assert stop(b) == [0]
    trials = env.trials(name)
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
    assert retry.params == dead.params and retry.state == TS.COMPLETE
    assert not {"interrupted", "fail_reason", "error"} & set(retry.user_attrs), retry.user_attrs
    assert env.trials(name)[dead.number].user_attrs["interrupted"] == "worker lost: lease expired"
    assert env.study_row(name)["n_failed"] == 0
    check_lifecycle(env, name)


def test_a_sampler_option_optuna_would_reject_is_refused_at_submit(env):
    """TPE ``gamma: 5`` used to be accepted and fail every trial ("sampler: TypeError"); it is a
    SpecError naming the option now, before any ticket is queued."""
    with pytest.raises(SpecError, match="sampler.gamma"):
        env.create(_tiny("gamma", 4, sampler={"name": "tpe", "seed": 0, "gamma": 5, "n_startup_trials": 1}))


def test_two_processes_adopting_a_legacy_database_do_not_race():
    """Two processes start together on a database whose tables predate migrations. Both wait
    for the advisory lock before looking at the database, so one adopts and upgrades it and
    the other finds it current."""
    url = create_pg_database()
    engines = [sa.create_engine(url) for _ in range(3)]
    try:
        migrate.upgrade(engines[0], migrate.FIRST)
        with engines[0].begin() as c:  # what rnntune 0.1's create_all left: tables, no history
            c.execute(sa.text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        errors: list[BaseException] = []

        def start(engine):
            try:
                migrate.upgrade(engine)
            except BaseException as exc:
                errors.append(exc)

        with engines[0].connect() as holder:  # hold the lock while both processes start
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": migrate.LOCK_KEY})
            threads = [threading.Thread(target=start, args=(e,)) for e in engines[1:]]
            for t in threads:
                t.start()
            time.sleep(1.5)
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrate.LOCK_KEY})
            holder.commit()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert migrate.current(engines[0]) == migrate.head()
    finally:
        for e in engines:
            e.dispose()
        drop_pg_database(url)


# 8. orphaned workers -------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone, only unreaped
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_worker_outlives_serve(env, sig):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = rnntune(
        "serve",
        "--workers",
        "2",
        "--port",
        str(port),
        env={"RNNTUNE_DATABASE_URL": env.url, "RNNTUNE_POLL_INTERVAL_S": "0.3"},
    )
    try:
        workers = wait_for(
            lambda: (ws := env.workers(state="idle")) and len(ws) == 2 and ws, 90, 0.5, "serve's two workers"
        )
        pids = [w["pid"] for w in workers]
        serve.send_signal(sig)
        serve.wait(timeout=20)
        wait_for(lambda: not any(_alive(p) for p in pids), 15, 0.2, f"serve's workers {pids} to exit after {sig.name}")
    finally:
        if serve.poll() is None:
            serve.kill()
        for w in env.workers():
            if _alive(w["pid"]):
                os.kill(w["pid"], signal.SIGKILL)
