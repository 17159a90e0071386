"""``queue.settle`` and the expired-lease sweep in-process, on PostgreSQL and SQLite: the rule of
docs/architecture.md's lifecycle table, applied once however often it is retried, and on the
database's clock."""

from __future__ import annotations

import time

import optuna
import pytest

from rnntune.service import queue
from rnntune.service.search import pinned_sampler
from rnntune.service.store.tables import StudyRow, TicketRow, TicketState
from rnntune.service.trials.outcome import Interruption, TrialOutcome
from tests.queue_helpers import Env, end_active_studies, spec


@pytest.fixture(scope="module")
def module_env(db_url):
    """On both databases (the conftest's ``module_env`` is PostgreSQL's)."""
    e = Env(db_url)
    yield e
    e.close()


@pytest.fixture
def env(module_env):
    return end_active_studies(module_env)


def _claim(env: Env, worker: str, lease_s: float = 30) -> queue.Claim:
    with env.sessions() as s:
        out = queue.claim(s, worker, labels=set(), lease_s=lease_s)
    assert out is not None
    return out


def _start(env: Env, claim: queue.Claim, worker: str, *, value: float | None) -> optuna.trial.FrozenTrial:
    """Start an Optuna trial under the ticket; ``value`` given: Optuna records it COMPLETE."""
    study = optuna.load_study(study_name=claim.study_name, storage=env.storage)
    if claim.params:  # as the worker runs a ticket that carries its parameters
        study.sampler = pinned_sampler(study.sampler, claim.params)
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    with env.sessions() as s:
        assert queue.start_trial(s, claim, worker, trial_id=trial._trial_id, trial_number=trial.number)
    if value is not None:
        study.tell(trial, value)
    return env.storage.get_trial(trial._trial_id)


def _ticket(env: Env, ticket_id: int) -> TicketRow:
    with env.sessions() as s:
        return s.get(TicketRow, ticket_id)


def _study(env: Env, name: str) -> StudyRow:
    with env.sessions() as s:
        return s.query(StudyRow).filter_by(name=name).one()


def test_a_retried_failed_settle_counts_once(env):
    name = env.create(spec("twice", n_trials=2, max_epochs=1))
    claim = _claim(env, "w-1")
    trial = _start(env, claim, "w-1", value=None)
    failed = TrialOutcome.failed("RuntimeError: boom", trial._trial_id, trial.number)
    with env.sessions() as s:
        first = queue.settle(s, claim, "w-1", failed)
    with env.sessions() as s:  # the first commit's acknowledgement was lost: the worker retries
        second = queue.settle(s, claim, "w-1", failed)
    assert first.held and first.ticket == TicketState.QUEUED
    assert not second.held
    assert _study(env, name).n_failed == 1
    row = _ticket(env, claim.ticket_id)
    assert row.state == TicketState.QUEUED and row.trial_id is None and row.last_error == "RuntimeError: boom"


def test_settle_spends_a_ticket_whose_trial_finished_whatever_the_worker_saw(env):
    name = env.create(spec("told", n_trials=1, max_epochs=1))
    claim = _claim(env, "w-1")
    trial = _start(env, claim, "w-1", value=0.5)  # tell committed; the worker saw an error
    with env.sessions() as s:
        settled = queue.settle(s, claim, "w-1", TrialOutcome.interrupted(Interruption.STORAGE, trial._trial_id))
    assert settled.held and settled.ticket == TicketState.DONE and settled.spent
    row = _ticket(env, claim.ticket_id)
    assert (row.state, row.outcome, row.trial_number) == ("done", "COMPLETE", trial.number)
    assert _study(env, name).n_failed == 0


def test_expired_lease_of_a_finished_trial_is_done_not_requeued(env):
    name = env.create(spec("expired", n_trials=2, max_epochs=1))
    claim = _claim(env, "w-dead", lease_s=0.5)
    trial = _start(env, claim, "w-dead", value=0.25)  # then the worker died before its settle
    other = _claim(env, "w-dead", lease_s=0.5)
    lost_trial = _start(env, other, "w-dead", value=None)  # died mid-trial
    time.sleep(1.2)
    with env.sessions() as s:
        assert queue.requeue_expired_now(s) == 1
    done, back = _ticket(env, claim.ticket_id), _ticket(env, other.ticket_id)
    assert (done.state, done.outcome, done.trial_number) == ("done", "COMPLETE", trial.number)
    assert (back.state, back.last_error) == ("queued", "lease expired")
    # the sweep judged the lost trial: failed as interrupted, its parameters back with the ticket
    lost = env.storage.get_trial(lost_trial._trial_id)
    assert lost.state == optuna.trial.TrialState.FAIL and lost.user_attrs["interrupted"] == "worker lost: lease expired"
    assert (back.trial_id, back.params, back.retry_of, back.deaths) == (None, lost.params, lost.number, 1)
    again = _claim(env, "w-2")
    assert again.ticket_id == other.ticket_id and (again.params, again.retry_of) == (lost.params, lost.number)
    assert _study(env, name).state == "running" and _study(env, name).n_failed == 0


@pytest.mark.parametrize("attrs", [{"interrupted": "worker stopped"}, {}])
def test_the_sweep_judges_a_lost_trial_by_what_its_worker_recorded(env, attrs):
    """A worker that lost its lease mid-trial stopped it (``interrupted``, then Optuna's FAIL) or
    broke (FAIL and nothing recorded) before the sweep came: the first keeps its parameters, the
    second is one counted failure."""
    name = env.create(spec(f"judged-{len(attrs)}", n_trials=1, max_epochs=1))
    claim = _claim(env, "w-lost", lease_s=0.5)
    trial = _start(env, claim, "w-lost", value=None)
    for key, value in attrs.items():
        env.storage.set_trial_user_attr(trial._trial_id, key, value)
    env.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    time.sleep(1.2)
    with env.sessions() as s:
        assert queue.requeue_expired_now(s) == 1
        assert queue.requeue_expired_now(s) == 0  # judged once
    back = _ticket(env, claim.ticket_id)
    if attrs:
        assert (back.params, back.retry_of, back.deaths, _study(env, name).n_failed) == (trial.params, 0, 0, 0)
    else:
        assert (back.params, back.retry_of, _study(env, name).n_failed) == (None, None, 1)


def test_deaths_on_the_same_parameters_are_capped(env):
    """max_retries (2) deaths on one trial's parameters retry them; the next is a counted failure."""
    name = env.create(spec("capped", n_trials=1, max_epochs=1))
    params = None
    for death in (1, 2, 3):
        claim = _claim(env, f"w-{death}", lease_s=0.5)
        assert claim.params == params
        trial = _start(env, claim, f"w-{death}", value=None)
        assert params is None or trial.params == params  # the retry drew nothing new
        params = params or trial.params
        time.sleep(1.2)
        with env.sessions() as s:
            queue.requeue_expired_now(s)
        back = _ticket(env, claim.ticket_id)
        if death < 3:
            assert (back.params, back.deaths, _study(env, name).n_failed) == (params, death, 0)
    assert (back.params, back.deaths, _study(env, name).n_failed) == (None, 0, 1)
    assert "worker lost 3 times on this trial" in back.last_error
    assert env.storage.get_trial(trial._trial_id).user_attrs["fail_reason"] == "worker lost"


def test_settle_of_a_ticket_held_by_another_worker_changes_nothing(env):
    name = env.create(spec("foreign", n_trials=1, max_epochs=1))
    claim = _claim(env, "w-1")
    with env.sessions() as s:
        settled = queue.settle(s, claim, "w-other", TrialOutcome.failed("x"))
    assert not settled.held
    assert _ticket(env, claim.ticket_id).state == TicketState.LEASED and _study(env, name).n_failed == 0


def test_data_error_fails_the_study_at_once_and_counts(env):
    name = env.create(spec("nodata", n_trials=3, max_epochs=1))
    claim = _claim(env, "w-1")
    with env.sessions() as s:
        settled = queue.settle(s, claim, "w-1", TrialOutcome.data_error("data: file not found"))
    assert settled.study == "failed"
    row = _study(env, name)
    assert (row.state, row.reason, row.n_failed) == ("failed", "data: file not found", 1)
    assert {t["state"] for t in env.tickets(name)} == {"cancelled"}


def test_a_timed_out_study_is_still_finalized(env):
    """Past ``timeout_s`` no trial ticket is claimable, but the finalize ticket of a study with a
    completed trial is: the study ends done with its model, not stuck running."""
    name = env.create(spec("late", n_trials=3, max_epochs=1, budget={"timeout_s": 1}))
    claim = _claim(env, "w-1")
    trial = _start(env, claim, "w-1", value=0.5)
    with env.sessions() as s:
        queue.settle(s, claim, "w-1", TrialOutcome.complete(trial._trial_id, trial.number, 0.5))
    time.sleep(1.3)
    final = _claim(env, "w-1")
    assert final.kind == "finalize" and final.study_name == name
    assert [t["state"] for t in env.tickets(name) if t["kind"] == "trial"] == ["done", "cancelled", "cancelled"]
