"""Re-evaluated winners (``selection``, issue 16): the spec's checks, each naming its field, and the
queue's part in-process on real PostgreSQL: no reeval ticket by default, one per further run of
each candidate otherwise, the finalize ticket only after them, every run counted once however
often its settle is retried, an expired lease counted toward the retry cap, pause and cancel,
and the winner by mean."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from rnntune.service import queue
from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from rnntune.service.spec import Limits, SpecError, parse_spec, stored_spec
from rnntune.service.store.tables import EvaluationRow, StudyRow
from rnntune.service.studies import registry
from rnntune.service.trials import selection
from rnntune.service.trials.outcome import TrialOutcome
from tests.queue_helpers import Env, spec

pytestmark = pytest.mark.shared_database

SELECT = {"top_k": 2, "seeds": 2, "folds": 1}


def _spec(name: str, **extra) -> dict:
    return spec(name, n_trials=3, **extra)


# --- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"selection": {"top_k": 0}}, "selection.top_k", "greater than or equal to 1"),
        ({"selection": {"seeds": "two"}}, "selection.seeds", "integer"),
        ({"selection": {"folds": 2, "bogus": 1}}, "selection.bogus", "Extra inputs"),
        (
            {"data": {"name": "plugin", "plugin": "my-data"}, "selection": {"folds": 2}},
            "selection.folds",
            "folds need a data set rnntune splits (sine, sunspots, co2, csv, adding, digits, npz, text), "
            "but got data.name='plugin'",
        ),
        (
            {"objectives": ["val_loss", "n_params"], "selection": {"top_k": 3}},
            "selection",
            "several objectives keeps its Pareto front",
        ),
        (
            {"selection": {"top_k": 5, "seeds": 4, "folds": 3}},
            "selection",
            "5 x 4 x 3 = 60 runs, over this server's limit RNNTUNE_MAX_SELECTION_RUNS=50",
        ),
    ],
)
def test_a_bad_selection_names_its_field(change, field, says):
    body = {**_spec("bad"), **change}
    with pytest.raises(SpecError) as caught:
        parse_spec(body, Limits())
    assert [loc for loc, _ in caught.value.errors] == [field], caught.value.errors
    assert says in caught.value.errors[0][1], caught.value.errors


def test_an_objective_plugin_study_takes_no_selection():
    body = {
        "name": "own",
        "metric": "score",
        "direction": "maximize",
        "objective": {"plugin": "my-objective"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"n_trials": 2},
        "selection": {"seeds": 2},
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(body)
    assert caught.value.errors[0][0] == "selection" and "objective plugin or command" in caught.value.errors[0][1]


def test_the_default_selection_keeps_the_spec_hash_and_the_limit_is_a_setting(sqlite_url):
    plain = parse_spec(_spec("same"))
    explicit = parse_spec({**_spec("same"), "selection": {"top_k": 1, "seeds": 1, "folds": 1}})
    assert "selection" not in plain.canonical_json()
    assert registry.spec_hash(plain) == registry.spec_hash(explicit)
    assert registry.spec_hash(parse_spec({**_spec("same"), "selection": SELECT})) != registry.spec_hash(plain)
    # RNNTUNE_MAX_SELECTION_RUNS, through the API: the 422 names the field, the value and the setting
    with TestClient(create_app(Settings(database_url=sqlite_url, max_selection_runs=6), dashboard=False)) as c:
        r = c.post("/v1/studies", json={**_spec("limit"), "selection": {"top_k": 2, "seeds": 2, "folds": 2}})
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "selection"] and "= 8 runs" in error["msg"], error
        assert "RNNTUNE_MAX_SELECTION_RUNS=6" in error["msg"]
        schema = c.get("/openapi.json").json()["components"]["schemas"]["SelectionSpec"]
    assert {k: schema["properties"][k]["minimum"] for k in ("top_k", "seeds", "folds")} == dict.fromkeys(
        ("top_k", "seeds", "folds"), 1
    )


# --- the queue ---------------------------------------------------------------------------------


def _claim(env: Env, worker: str = "w", lease_s: float = 30) -> queue.Claim | None:
    with env.sessions() as s:
        return queue.claim(s, worker, labels=set(), lease_s=lease_s)


def _run_search(env: Env, values: list[float]) -> None:
    """Complete one trial per value, as a worker would (claim, Optuna trial, settle)."""
    for value in values:
        claim = _claim(env)
        assert claim is not None and claim.kind == "trial"
        study = optuna.load_study(study_name=claim.study_name, storage=env.storage)
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
        with env.sessions() as s:
            assert queue.start_trial(s, claim, "w", trial_id=trial._trial_id, trial_number=trial.number)
        study.tell(trial, value)
        with env.sessions() as s:
            queue.settle(s, claim, "w", TrialOutcome.complete(trial._trial_id, trial.number, value))


def _kinds(env: Env, name: str) -> list[tuple[int, str, str]]:
    return [(t["seq"], t["kind"], t["state"]) for t in env.tickets(name)]


def _runs(env: Env, name: str) -> list[dict]:
    with env.engine.connect() as c:
        rows = c.execute(
            sa.select(EvaluationRow.__table__)
            .join(StudyRow, StudyRow.id == EvaluationRow.study_id)
            .where(StudyRow.name == name)
            .order_by(EvaluationRow.id)
        )
        return [dict(r._mapping) for r in rows]


def _summary(env: Env, name: str) -> dict | None:
    with env.sessions() as s:
        row = registry.get_study(s, name)
        return selection.summary(s, row.id, row.optuna_study_id, stored_spec(row))


def _settle(env: Env, claim: queue.Claim, worker: str = "w", **kwargs) -> queue.Settled:
    with env.sessions() as s:
        return queue.settle_reeval(s, claim, worker, **kwargs)


def test_the_default_selection_queues_no_reeval_ticket(env):
    name = env.create(spec("plain", n_trials=2))
    _run_search(env, [2.0, 1.0])
    assert _kinds(env, name) == [(0, "trial", "done"), (1, "trial", "done"), (2, "finalize", "queued")]
    assert _runs(env, name) == [] and _summary(env, name) is None


def test_reeval_tickets_run_once_each_then_the_finalize_ticket(env):
    name = env.create(_spec("sel", selection=SELECT))
    _run_search(env, [3.0, 1.0, 2.0])  # trials 0, 1, 2: candidates 1 then 2
    assert _kinds(env, name)[3:] == [(3, "reeval", "queued"), (4, "reeval", "queued")]
    runs = _runs(env, name)
    assert [(r["trial_number"], r["rank"], r["seed_index"], r["fold"], r["state"], r["value"]) for r in runs] == [
        (1, 0, 0, 0, "complete", 1.0),  # the search trials themselves: no ticket
        (2, 1, 0, 0, "complete", 2.0),
        (1, 0, 1, 0, "pending", None),
        (2, 1, 1, 0, "pending", None),
    ]
    with env.sessions() as s:  # shown as finalizing while re-evaluating
        assert registry.summaries(s, [registry.get_study(s, name)])[0].state == "finalizing"
        assert selection.progress(s, registry.get_study(s, name).id, parse_spec(_spec("sel", selection=SELECT))) == {
            "done": 0,
            "total": 2,
        }

    first = _claim(env, "a")
    assert first.kind == "reeval"
    assert _settle(env, first, "a", value=5.0, best_epoch=2, seconds=0.1).held
    assert not _settle(env, first, "a", value=5.0).held, "a retried settle counted twice"
    second = _claim(env, "b")
    # an error goes back to the queue, one failure toward max_retries; then another worker runs it
    assert _settle(env, second, "b", error="RuntimeError: boom").ticket == "queued"
    assert _kinds(env, name)[-1] == (4, "reeval", "queued")
    again = _claim(env, "c")
    assert again.ticket_id == second.ticket_id and again.attempts == 2
    assert not any(k == "finalize" for _, k, _ in _kinds(env, name)), "finalize before the re-evaluations"
    assert _settle(env, again, "c", value=2.5).held
    assert _kinds(env, name)[-1] == (5, "finalize", "queued")

    runs = {(r["trial_number"], r["seed_index"]): r for r in _runs(env, name)}
    assert (runs[1, 1]["value"], runs[1, 1]["worker_id"], runs[1, 1]["best_epoch"]) == (5.0, "a", 2)
    assert (runs[2, 1]["value"], runs[2, 1]["worker_id"], runs[2, 1]["failures"]) == (2.5, "c", 1)
    summary = _summary(env, name)
    # trial 1: 1.0, 5.0 (mean 3); trial 2: 2.0, 2.5 (mean 2.25): the runner-up of the search wins
    assert [(c["trial"], c["mean"], c["n"]) for c in summary["candidates"]] == [(1, 3.0, 2), (2, 2.25, 2)]
    assert summary["candidates"][0]["sd"] == pytest.approx(2.8284271, rel=1e-6)
    assert (summary["winner"], summary["search_best"], summary["done"], summary["total"]) == (2, 1, 2, 2)


def test_an_expired_reeval_lease_counts_as_a_failure_and_the_dead_holder_cannot_settle(env):
    name = env.create(_spec("lost", selection={"top_k": 1, "seeds": 2}))
    _run_search(env, [1.0, 2.0, 3.0])
    dead = _claim(env, "dead", lease_s=0.5)
    time.sleep(1.0)
    with env.sessions() as s:
        assert queue.requeue_expired_now(s) == 1
    (run,) = [r for r in _runs(env, name) if r["ticket_id"] is not None]
    assert (run["state"], run["failures"], run["error"]) == ("pending", 1, "lease expired")
    alive = _claim(env, "alive")
    assert alive.ticket_id == dead.ticket_id
    assert not _settle(env, dead, "dead", value=9.0).held  # the dead holder's late settle changes nothing
    assert _settle(env, alive, "alive", value=1.5).held
    (run,) = [r for r in _runs(env, name) if r["ticket_id"] is not None]
    assert (run["state"], run["value"], run["worker_id"], run["failures"]) == ("complete", 1.5, "alive", 1)
    assert _summary(env, name)["candidates"][0]["values"] == [1.0, 1.5]


def test_reeval_tickets_run_past_the_timeout_stop_when_paused_and_end_when_cancelled(env):
    name = env.create(_spec("ctl", selection={"top_k": 1, "seeds": 3}, budget={"timeout_s": 60}))
    _run_search(env, [1.0, 2.0, 3.0])
    with env.sessions() as s:  # past budget.timeout_s: no trial would start, a re-evaluation does
        s.execute(
            sa.update(StudyRow)
            .where(StudyRow.name == name)
            .values(deadline_at=sa.func.now() - sa.text("interval '1 hour'"))
        )
        s.commit()
    held = _claim(env)
    assert held is not None and held.kind == "reeval"
    with env.sessions() as s:
        study_id = registry.get_study(s, name).id
        queue.pause_study(s, study_id)
    assert _claim(env) is None, "a paused study's re-evaluation was claimed"
    # the held run stops at its next epoch and goes back, not counted as a failure
    assert _settle(env, held, error="interrupted: paused", counts=False).ticket == "queued"
    assert all(r["failures"] == 0 for r in _runs(env, name))
    with env.sessions() as s:
        queue.resume_study(s, study_id)
    resumed = _claim(env)
    assert resumed is not None and resumed.kind == "reeval"
    with env.sessions() as s:
        queue.cancel_study(s, study_id)
    assert _settle(env, resumed, error="interrupted: cancelled", counts=False).ticket == "cancelled"
    states = [state for _, kind, state in _kinds(env, name) if kind == "reeval"]
    assert states == ["cancelled", "cancelled"]
    assert not any(kind == "finalize" for _, kind, _ in _kinds(env, name))


def test_fewer_complete_trials_than_top_k_make_fewer_candidates(env):
    name = env.create(spec("few", n_trials=1, selection={"top_k": 3, "seeds": 2}))
    _run_search(env, [4.0])
    assert [k for _, k, _ in _kinds(env, name)] == ["trial", "reeval"]
    assert [c["trial"] for c in _summary(env, name)["candidates"]] == [0]


def test_a_worker_keeps_one_copy_of_the_data_per_fold():
    from rnntune.service.data.data_cache import DataCache

    study = parse_spec(spec("cache", n_trials=1, n_series=12, selection={"folds": 2}))
    cache = DataCache()
    whole = cache.get(study, 48)
    assert cache.get(study, 48) is whole  # a cache hit, not a reload per trial
    fold = cache.get(study, 48, fold=(0, 2))
    assert fold is not whole and cache.get(study, 48, fold=(0, 2)) is fold
    assert len(fold.x_test) == 0 and len(whole.x_test) > 0 and fold.meta["fold"]["index"] == 0


def test_the_winner_is_the_best_mean_ties_to_the_better_search_rank():
    cands = [
        {"trial": 4, "rank": 0, "mean": 2.0},
        {"trial": 7, "rank": 1, "mean": 1.5},
        {"trial": 9, "rank": 2, "mean": 1.5},
        {"trial": 11, "rank": 3, "mean": None},
    ]
    assert selection.pick_winner(cands, "minimize") == 7
    assert selection.pick_winner(cands, "maximize") == 4
    assert selection.pick_winner([{"trial": 1, "rank": 0, "mean": None}], "minimize") is None
    assert selection.run_seed(5, 0) == 5 and len({selection.run_seed(5, i) for i in range(10)}) == 10
