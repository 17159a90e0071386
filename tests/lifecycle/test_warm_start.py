"""``warm_start: {from: [...], top_k: N}`` on real PostgreSQL: what is refused (422 naming the
field), what the new study's first tickets carry, the history its sampler gets, and that rnntune
counts none of that history as the study's own (counts, best, finalize)."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from rnntune.service import queue
from rnntune.service.api.app import create_app
from rnntune.service.store.tables import StudyRow
from tests.lifecycle.test_study_ops import tiny, workers
from tests.queue_helpers import FINISHED, Env

pytestmark = [pytest.mark.slow, pytest.mark.shared_database]

LR = optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
LAYERS = optuna.distributions.IntDistribution(1, 2)


@pytest.fixture(scope="module")
def client(module_env):
    with TestClient(create_app(module_env.settings, dashboard=False)) as c:
        yield c


def told(env: Env, name: str, trials: list[tuple[float, int, float]]) -> list[dict]:
    """Complete trials with exactly these params and values (``enqueue_trial`` pins the params)."""
    env.create(tiny(name, len(trials)))
    with env.sessions() as s:
        queue.cancel_study(s, s.scalar(sa.select(StudyRow.id).where(StudyRow.name == name)))
    study = optuna.load_study(study_name=name, storage=env.storage)
    for lr, layers, value in trials:
        study.enqueue_trial({"lr": lr, "num_layers": layers})
        trial = study.ask({"lr": LR, "num_layers": LAYERS})
        study.tell(trial, value)
    return [{"lr": lr, "num_layers": layers} for lr, layers, _ in sorted(trials, key=lambda t: t[2])]


def errors(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {".".join(map(str, d["loc"][1:])): d["msg"] for d in r.json()["detail"]}


TRIALS = [(0.002, 1, 0.9), (0.01, 2, 0.01), (0.05, 1, 0.02), (0.003, 2, 0.5), (0.02, 2, 0.03), (0.07, 1, 0.8)]


def test_warm_start_is_refused_naming_the_field(env, client):
    told(env, "ws-src", TRIALS)
    bad = tiny("ws-bad", 4)
    r = client.post("/v1/studies", json={**bad, "warm_start": {"from": ["ws-nope"]}})
    assert errors(r) == {"warm_start.from[0]": "no study named 'ws-nope'"}
    r = client.post("/v1/studies", json={**bad, "warm_start": {"from": ["ws-src", "ws-bad"]}})
    assert "a study cannot start from itself" in errors(r)["warm_start.from[1]"]
    r = client.post("/v1/studies", json={**bad, "warm_start": {"from": ["ws-src"], "top_k": 101}})
    assert "RNNTUNE_MAX_WARM_START_TRIALS=100" in r.text and r.status_code == 422
    r = client.post("/v1/studies", json={**bad, "warm_start": {"from": ["ws-src"], "top_k": 5}})
    assert "budget.n_trials=4" in errors(r)["warm_start.top_k"]  # 5 to start from, 4 tickets
    grid = tiny(
        "ws-grid", 2, sampler={"name": "grid"}, search_space={"num_layers": {"type": "int", "low": 1, "high": 2}}
    )
    r = client.post("/v1/studies", json={**grid, "warm_start": {"from": ["ws-src"]}})
    assert r.status_code == 422 and "grid" in r.text
    # incompatible spaces: which parameter, and why
    kinds = {**bad, "search_space": {"lr": {"type": "categorical", "choices": [0.01, 0.02]}}}
    msg = errors(client.post("/v1/studies", json={**kinds, "warm_start": {"from": ["ws-src"]}}))["warm_start.from[0]"]
    assert "parameter 'lr'" in msg and "float there, categorical here" in msg
    apart = {**bad, "search_space": {"lr": {"type": "float", "low": 0.2, "high": 0.5}}}
    msg = errors(client.post("/v1/studies", json={**apart, "warm_start": {"from": ["ws-src"]}}))["warm_start.from[0]"]
    assert "parameter 'lr'" in msg and "does not meet" in msg
    fixed = {**bad, "search_space": {"hidden_size": {"type": "int", "low": 16, "high": 32}}, "model": {"cell": "gru"}}
    msg = errors(client.post("/v1/studies", json={**fixed, "warm_start": {"from": ["ws-src"]}}))["warm_start.from[0]"]
    assert "parameter 'hidden_size'" in msg and "trained every trial with 2" in msg
    assert client.get("/v1/studies/ws-bad").status_code == 404  # nothing was created


def test_a_warm_start_runs_the_best_first_and_its_history_counts_for_nothing(env, client, tmp_path):
    best = told(env, "ws-from", TRIALS)
    warm = {**tiny("ws-warm", 5), "warm_start": {"from": ["ws-from"], "top_k": 3}}
    warm["initial_trials"] = [best[1]]  # given twice: once it runs
    r = client.post("/v1/studies", json=warm)
    assert r.status_code == 201, r.text
    # counted for nothing: no trial finished, no best yet
    assert r.json()["finished"] == 0 and r.json()["counts"]["complete"] == 0 and r.json()["best_value"] is None
    tickets = [t["params"] for t in env.tickets("ws-warm")]
    assert tickets == [best[1], best[0], best[2], None, None]  # initial_trials first, then the 3 best once each
    history = env.trials("ws-warm")  # the same space: every complete trial is the sampler's history
    assert len(history) == len(TRIALS) and all(t.state == optuna.trial.TrialState.COMPLETE for t in history)
    assert sorted(t.user_attrs["warm_start_from"] for t in history) == sorted(f"ws-from#{i}" for i in range(6))
    assert not any(t.intermediate_values for t in history)  # the pruner compares this study's curves only

    running = workers(env, tmp_path)
    try:
        env.wait_state("ws-warm", ("done",), 120)
    finally:
        for w in running:
            w.stop()
    own = [t for t in env.trials("ws-warm") if "warm_start_from" not in t.user_attrs]
    assert len([t for t in own if t.state in FINISHED]) == 5
    # the first three tickets (claimed first) ran their pinned params, once each; their trials'
    # numbers need not be in ticket order (two workers create trials in whichever order they reach it)
    by_number = {t.number: t for t in own}
    first = [by_number[t["trial_number"]].params for t in env.tickets("ws-warm")[:3]]
    assert first == [best[1], best[0], best[2]]
    assert sorted(map(str, (t.params for t in own if t.params in first))) == sorted(map(str, first))
    summary = client.get("/v1/studies/ws-warm").json()
    assert summary["finished"] == 5 and summary["counts"]["complete"] + summary["counts"]["pruned"] == 5
    # the history's values (0.01 ...) would win on val loss: neither the best nor the model is one of them
    assert summary["best_trial"]["number"] >= len(TRIALS)
    assert summary["best_value"] == min(t.value for t in own if t.value is not None)
    model = client.get("/v1/studies/ws-warm/best").json()
    assert model["trial_number"] >= len(TRIALS) and model["model"] is not None


def test_another_space_takes_only_the_trials_that_fit_and_gives_no_history(env, client):
    told(env, "ws-wide", TRIALS)
    narrow = tiny("ws-narrow", 3, search_space={"lr": {"type": "float", "low": 0.004, "high": 0.03, "log": True}})
    r = client.post("/v1/studies", json={**narrow, "warm_start": {"from": ["ws-wide"], "top_k": 5}})
    assert r.status_code == 201, r.text
    # fit: lr in [0.004, 0.03]; num_layers, not searched here, is left out (this study's own value)
    assert [t["params"] for t in env.tickets("ws-narrow")] == [{"lr": 0.01}, {"lr": 0.02}, None]
    assert env.trials("ws-narrow") == []  # another space: no history for the sampler
