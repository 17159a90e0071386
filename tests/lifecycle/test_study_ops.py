"""A study after its budget, on real PostgreSQL with real workers: extend it (more trials, the
sampler's whole history, finalize again, model versions), delete it (refused while trials run,
forced, the name free again), and a worker killed during an extension and its second finalize.

The extension and delete tests run two in-process workers (threads of this process: the TPE
check spies on the sampler); the kill test runs worker subprocesses."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.store.tables import StudyState
from rnntune.service.trials.outcome import Outcome, TrialOutcome
from rnntune.service.worker import Worker
from tests.conftest import wait_for
from tests.queue_helpers import TS, Env, Running, kill9, spec, stop

pytestmark = [pytest.mark.slow, pytest.mark.shared_database]


@pytest.fixture(scope="module")
def client(module_env):
    with TestClient(create_app(module_env.settings, dashboard=False)) as c:
        yield c


def workers(env: Env, tmp_path, n: int = 2, **settings) -> list[Running]:
    update = {"lease_s": 3.0, "poll_interval_s": 0.2, "data_dir": tmp_path, **settings}
    return [Running(Worker(env.settings.model_copy(update=update), threads=1)) for _ in range(n)]


def tiny(name: str, n_trials: int, **extra) -> dict:
    """A sine study of two searched parameters whose trials last a fraction of a second."""
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "num_layers": {"type": "int", "low": 1, "high": 2},
    }
    return spec(name, n_trials=n_trials, max_epochs=1, n_series=8, hidden=2, **{"search_space": space, **extra})


def versions(client, name: str) -> list[dict]:
    r = client.get(f"/v1/studies/{name}/models")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def assert_one_current(client, name: str) -> dict:
    """Exactly one current version, the best by metric (ties: the older), and /best/model serves it."""
    items = versions(client, name)
    current = [v for v in items if v["current"]]
    assert len(current) == 1, items
    best = min(items, key=lambda v: (v["metric"], v["version"]))
    assert current[0]["version"] == best["version"], items
    r = client.get(f"/v1/studies/{name}/best/model")
    assert r.status_code == 200 and r.headers["X-Checksum-Sha256"] == current[0]["sha256"]
    assert client.get(f"/v1/studies/{name}/best").json()["model"]["sha256"] == current[0]["sha256"]
    return current[0]


def test_extend_a_done_study_runs_k_more_trials_with_tpe_and_finalizes_again(env, client, tmp_path, monkeypatch):
    name = env.create(tiny("ext-done", 20, sampler={"name": "tpe", "seed": 0, "n_startup_trials": 10}))
    random_draws: list[int] = []  # trial numbers TPE drew at random (its startup trials)
    real = optuna.samplers.RandomSampler.sample_independent

    def spy(self, study, trial, name, distribution):
        random_draws.append(trial.number)
        return real(self, study, trial, name, distribution)

    monkeypatch.setattr(optuna.samplers.RandomSampler, "sample_independent", spy)
    running = workers(env, tmp_path)
    try:
        env.wait_state(name, ("done",), 180)
        assert [v["version"] for v in versions(client, name)] == [1]
        first_model = assert_one_current(client, name)
        assert random_draws and max(random_draws) < 20  # the first round spent the startup trials
        n_random = len(random_draws)

        r = client.post(f"/v1/studies/{name}/extend", json={"n_trials": 5})
        assert r.status_code == 200, r.text
        assert r.json()["n_trials"] == 25 and r.json()["state"] in ("running", "finalizing", "done")
        env.wait_state(name, ("done",), 180)
    finally:
        for w in running:
            w.stop()
    trials = env.assert_exact_budget(name, 25)
    assert len(random_draws) == n_random, "the extension drew at random: TPE's startup was spent again"
    assert {t.number for t in trials} == set(range(25))
    tickets = env.tickets(name)
    assert [t["round"] for t in tickets if t["kind"] == "trial"] == [0] * 20 + [1] * 5
    assert [t["round"] for t in tickets if t["kind"] == "finalize"] == [0, 1]  # finalize ran again
    assert all(t["state"] == "done" for t in tickets)
    items = versions(client, name)
    assert [v["version"] for v in items] == [1, 2] and items[0]["sha256"] == first_model["sha256"]
    current = assert_one_current(client, name)
    if items[1]["metric"] < items[0]["metric"]:  # the better model replaced the first ...
        assert current["version"] == 2
    else:  # ... or the first stays, the second listed beside it
        assert current["version"] == 1
    summary = client.get(f"/v1/studies/{name}").json()
    assert summary["finished"] == 25 and summary["state"] == "done"


def test_a_worse_model_keeps_the_old_one_current_and_a_retry_replaces_its_round(env):
    """The version rule on the store itself: better replaces, worse or equal is kept beside."""
    from rnntune.service.store import model_store
    from rnntune.service.store.tables import ModelRow, StudyRow

    name = env.create(tiny("versions", 1))

    def store(metric: float, round_: int, trial: int) -> bool:
        with env.sessions() as s:
            study = s.scalar(sa.select(StudyRow).where(StudyRow.name == name))
            study.round = round_
            s.commit()
            row = ModelRow(
                study_id=study.id, trial_number=trial, params={}, hyperparameters={}, metrics={}, config={},
                device="cpu", seconds=0.0, sha256=f"{trial:064d}", size=1, content=b"x", metric=metric,
            )  # fmt: skip
            return model_store.store(s, row, "minimize")

    def table() -> list[tuple]:
        with env.engine.connect() as c:
            return [
                tuple(r)
                for r in c.execute(
                    sa.text(
                        "SELECT m.version, m.round, m.trial_number, m.is_current FROM rnntune_models m "
                        "JOIN rnntune_studies s ON s.id = m.study_id WHERE s.name = :n ORDER BY m.version"
                    ),
                    {"n": name},
                )
            ]

    assert store(0.5, 0, 1) is True
    assert store(0.7, 1, 2) is False  # worse: version 1 stays current, version 2 listed
    assert table() == [(1, 0, 1, True), (2, 1, 2, False)]
    assert store(0.5, 2, 3) is False  # equal: the older stays
    assert store(0.3, 2, 4) is True  # a retried finalize of round 2, better: replaces its round's version
    assert table() == [(1, 0, 1, False), (2, 1, 2, False), (3, 2, 4, True)]


def test_extend_is_refused_while_finalizing_and_checks_its_limits(env, client):
    name = env.create(tiny("ext-refused", 1))
    assert client.post("/v1/studies/nope/extend", json={"n_trials": 1}).status_code == 404
    r = client.post(f"/v1/studies/{name}/extend", json={"n_trials": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "n_trials"]
    r = client.post(f"/v1/studies/{name}/extend", json={"n_trials": 10_000})
    assert r.status_code == 422 and "RNNTUNE_MAX_TRIALS_PER_STUDY" in r.json()["detail"][0]["msg"]
    # a queued study's budget grows in its round
    r = client.post(f"/v1/studies/{name}/extend", json={"n_trials": 1})
    assert r.status_code == 200 and r.json()["n_trials"] == 2
    spend(env, name, 2)  # the finalize ticket is queued: the study is finalizing
    assert client.get(f"/v1/studies/{name}").json()["state"] == "finalizing"
    r = client.post(f"/v1/studies/{name}/extend", json={"n_trials": 1})
    assert r.status_code == 409 and "finalizing" in r.json()["detail"]


def spend(env: Env, name: str, n: int) -> None:
    """Run ``n`` trial tickets of ``name`` by hand, as a worker would (claim, start, tell, settle)."""
    from rnntune.service import queue

    study = optuna.load_study(study_name=name, storage=env.storage)
    for _ in range(n):
        with env.sessions() as s:
            claim = queue.claim(s, "hand", labels=set(), lease_s=30)
        assert claim is not None and claim.kind == "trial" and claim.study_name == name
        trial = study.ask()
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.suggest_int("num_layers", 1, 2)
        with env.sessions() as s:
            assert queue.start_trial(s, claim, "hand", trial_id=trial._trial_id, trial_number=trial.number)
        study.tell(trial, 0.5)
        with env.sessions() as s:
            queue.settle(s, claim, "hand", TrialOutcome(Outcome.COMPLETE, trial._trial_id, trial.number))


def test_a_timed_out_study_extends_with_a_fresh_deadline_and_a_data_failure_does_not(env, client):
    from rnntune.service import queue

    name = env.create(tiny("ext-timeout", 2, budget={"timeout_s": 3600}))
    spend(env, name, 1)
    past = "started_at = started_at - interval '2 hours', deadline_at = deadline_at - interval '2 hours'"
    with env.engine.begin() as c:
        c.execute(sa.text(f"UPDATE rnntune_studies SET {past} WHERE name = :n"), {"n": name})
    r = client.post(f"/v1/studies/{name}/extend", json={"n_trials": 1})
    assert r.status_code == 409 and "timeout_s" in r.json()["detail"]  # running, past its deadline: ending
    with env.sessions() as s:
        queue.requeue_expired_now(s)
        queue.studies._expire_timeouts(s)  # what a claim's housekeeping does: the queued ticket is cancelled
        s.commit()
    with env.sessions() as s:  # the finalize ticket: the study ends done, its reason the timeout
        claim = queue.claim(s, "hand", labels=set(), lease_s=30)
        assert claim.kind == "finalize"
        queue.settle_finalize(s, claim, "hand", error=None, final=True)
    assert env.study_state(name) == ("done", "budget.timeout_s=3600 reached")
    r = client.post(f"/v1/studies/{name}/extend", json={"n_trials": 2})
    assert r.status_code == 200, r.text
    row = env.study_row(name)
    assert (row["state"], row["reason"], row["round"], row["n_trials"], row["n_failed"]) == ("running", None, 1, 3, 0)
    with env.engine.connect() as c:
        left = c.execute(
            sa.text("SELECT deadline_at - timezone('utc', now()) FROM rnntune_studies WHERE name = :n"), {"n": name}
        )
        assert left.scalar().total_seconds() > 3500  # a fresh deadline from now
    spend(env, name, 2)  # the new tickets are claimable again
    assert client.get(f"/v1/studies/{name}").json()["state"] == "finalizing"

    broken = env.create(tiny("ext-data-failed", 2))
    with env.sessions() as s:
        queue.finish_study(s, env.study_row(broken)["id"], StudyState.FAILED, "data: cannot be loaded")
        s.commit()
    r = client.post(f"/v1/studies/{broken}/extend", json={"n_trials": 1})
    assert r.status_code == 409 and "max_failed_trials" in r.json()["detail"]


def test_delete_refuses_running_trials_force_removes_everything_and_the_name_is_free(env, client, tmp_path):
    name = env.create(spec("del-me", n_trials=1, max_epochs=4, n_series=300, hidden=16))
    running = workers(env, tmp_path)
    try:
        env.wait_state(name, ("done",), 120)
        assert versions(client, name)  # a model is stored
        optuna_id = env.study_row(name)["optuna_study_id"]
        assert client.post(f"/v1/studies/{name}/extend", json={"n_trials": 20}).status_code == 200
        env.wait_mid_trial(name)
        r = client.delete(f"/v1/studies/{name}")
        assert r.status_code == 409 and "force" in r.json()["detail"], r.text
        assert client.get(f"/v1/studies/{name}").status_code == 200  # nothing removed

        r = client.delete(f"/v1/studies/{name}", params={"force": "true"})
        assert r.status_code == 204, r.text
        assert client.get(f"/v1/studies/{name}").status_code == 404
        assert client.get(f"/v1/studies/{name}/models").status_code == 404
        assert client.delete(f"/v1/studies/{name}").status_code == 404  # a second delete
        assert name not in optuna.get_all_study_names(env.storage)
        with env.engine.connect() as c:
            for table, where in (
                ("trials", f"study_id = {optuna_id}"),
                ("studies", f"study_id = {optuna_id}"),
                ("rnntune_studies", f"name = '{name}'"),
                ("rnntune_tickets t", "NOT EXISTS (SELECT 1 FROM rnntune_studies s WHERE s.id = t.study_id)"),
                ("rnntune_models m", "NOT EXISTS (SELECT 1 FROM rnntune_studies s WHERE s.id = m.study_id)"),
            ):
                assert c.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar() == 0, table

        # the name is free: a new study of that name (another spec) runs to its end on the same workers
        again = tiny(name, 3, seed=1)
        r = client.post("/v1/studies", json=again)
        assert r.status_code == 201, r.text
        env.wait_state(name, ("done",), 120)
        assert client.get(f"/v1/studies/{name}").json()["finished"] == 3
        assert [v["version"] for v in versions(client, name)] == [1]
    finally:
        for w in running:
            w.stop()  # neither died on the deleted study's tickets
    env.assert_exact_budget(name, 3)


def test_a_worker_left_holding_a_deleted_study_goes_on(env, client, tmp_path):
    """A forced delete that does not wait: the worker still training its trial finds the ticket
    gone (lost), its settle finds no study, and it takes the next study's tickets."""
    name = env.create(spec("del-held", n_trials=1, max_epochs=30, n_series=600, hidden=32))
    app = create_app(env.settings.model_copy(update={"delete_wait_s": 0.0}), dashboard=False)
    (worker,) = workers(env, tmp_path, n=1)
    try:
        env.wait_mid_trial(name)
        with TestClient(app) as impatient:
            assert impatient.delete(f"/v1/studies/{name}", params={"force": "true"}).status_code == 204
        after = env.create(tiny("after-del", 2))
        env.wait_state(after, ("done",), 120)
    finally:
        worker.stop()
    assert worker.worker.n_trials_run >= 3  # the deleted study's ticket, then both of the next


@pytest.mark.timeout(900)  # three worker processes start one after another: slow on a loaded machine
def test_a_worker_killed_during_an_extension_and_its_second_finalize(env, client):
    """Exact budget and one model per round, one current, however the workers die."""
    name = env.create(spec("ext-kill", n_trials=2, max_epochs=3, n_series=300, hidden=16))
    a = env.worker()
    try:
        env.wait_state(name, ("done",), 300)
        assert client.post(f"/v1/studies/{name}/extend", json={"n_trials": 3}).status_code == 200
        victim = wait_for(
            lambda: next((t for t in env.running(name) if t.number >= 2 and t.intermediate_values), None),
            120,
            0.1,
            "a trial of the extension mid-training",
        )
    finally:
        kill9(a)
    # this one runs the rest and dies (os._exit) right after its finalize stored the model
    f = env.faulty_worker("finalize:after:exit", training=None)
    try:
        assert f.wait(timeout=400) == 17
        c = env.worker()
        try:
            env.wait_state(name, ("done",), 300)
        finally:
            assert stop(c) == [0]
    finally:
        if f.poll() is None:
            kill9(f)
    trials = env.assert_exact_budget(name, 5)
    assert any(t.user_attrs.get("retry_of") == victim.number for t in trials)  # the lost trial ran again
    items = versions(client, name)
    assert [v["version"] for v in items] == [1, 2], items  # the retried finalize replaced its round's version
    assert_one_current(client, name)
    finals = [t for t in env.tickets(name) if t["kind"] == "finalize"]
    assert [(t["round"], t["state"]) for t in finals] == [(0, "done"), (1, "done")]
    assert TS.RUNNING not in {t.state for t in trials}
