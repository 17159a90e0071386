"""Re-evaluated winners end to end on real PostgreSQL with real worker processes (lease 5 s): a
worker runs the search, takes the first re-evaluation ticket and is killed in it; two workers
share the other runs and re-run the dead one's once its lease expires; every run counts once,
the winner is the best mean, and /best, the model file and ``rnntune status`` say so."""

from __future__ import annotations

import io
import statistics
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from tests.api_server import serving
from tests.conftest import REPO
from tests.queue_helpers import check_lifecycle, spec, stop
from tests.service.test_selection import _runs

pytestmark = pytest.mark.slow
FAULT_EXIT = 17  # tests/fault_worker.EXIT_CODE
SELECTION = {"top_k": 2, "seeds": 2, "folds": 2}


def test_two_workers_re_evaluate_the_best_trials_and_a_killed_run_counts_once(env, tmp_path):
    name = env.create(spec("reeval", n_trials=3, max_epochs=2, n_series=12, hidden=4, selection=SELECTION))
    # Alone, the first worker runs the search, then dies at the start of the first re-evaluation.
    dying = env.faulty_worker("reeval:before:exit", training=None)
    assert dying.wait(timeout=90) == FAULT_EXIT
    (lost,) = [t for t in env.tickets(name) if t["kind"] == "reeval" and t["state"] == "leased"]
    assert str(dying.pid) in lost["worker_id"]
    workers = [env.worker(), env.worker()]
    try:
        env.wait_state(name, ("done",), 90)
    finally:
        assert stop(*workers) == [0, 0]
    check_lifecycle(env, name)

    # one ticket per further run of each candidate (2 x (2 x 2 - 1)), then finalize; all spent once
    tickets = env.tickets(name)
    assert [(t["seq"], t["kind"]) for t in tickets] == [
        *[(i, "trial") for i in range(3)],
        *[(i, "reeval") for i in range(3, 9)],
        (9, "finalize"),
    ]
    assert all(t["state"] == "done" and t["outcome"] == "COMPLETE" for t in tickets)
    assert [t["attempts"] for t in tickets if t["kind"] == "reeval"] == [2, 1, 1, 1, 1, 1]
    runs = _runs(env, name)
    assert len(runs) == 8 and all(r["state"] == "complete" for r in runs)
    assert sorted(r["ticket_id"] for r in runs if r["ticket_id"]) == [t["id"] for t in tickets if t["kind"] == "reeval"]
    assert {(r["trial_number"], r["seed_index"], r["fold"]) for r in runs} == {
        (c, s, f) for c in {r["trial_number"] for r in runs} for s in (0, 1) for f in (0, 1)
    }
    (rerun,) = [r for r in runs if r["ticket_id"] == lost["id"]]
    assert rerun["failures"] == 1 and str(dying.pid) not in rerun["worker_id"]
    live = {str(w.pid) for w in workers}
    assert all(any(pid in r["worker_id"] for pid in live) for r in runs if r["ticket_id"])

    # the winner: the best mean over each candidate's 4 values (seed 0 on the last fold: its search value)
    values: dict[int, list[float]] = {}
    for r in runs:
        values.setdefault(r["trial_number"], []).append(r["value"])
    means = {trial: statistics.fmean(v) for trial, v in values.items()}
    winner = min(means, key=means.get)
    settings = Settings(database_url=env.url, data_dir=tmp_path)
    with TestClient(create_app(settings, dashboard=False)) as client:
        best = client.get(f"/v1/studies/{name}/best").json()
        study = client.get(f"/v1/studies/{name}").json()
        content = client.get(f"/v1/studies/{name}/best/model").content
    sel = best["selection"]
    assert (sel["winner"], best["trial_number"], best["model"]["trial_number"]) == (winner, winner, winner)
    assert (sel["done"], sel["total"], study["reevaluations"]) == (6, 6, {"done": 6, "total": 6})
    for c in sel["candidates"]:
        assert c["n"] == 4 and sorted(c["values"]) == sorted(values[c["trial"]])
        assert c["mean"] == pytest.approx(means[c["trial"]]) and c["sd"] == pytest.approx(statistics.stdev(c["values"]))
    assert sel["search_best"] == sel["candidates"][0]["trial"]

    from rnntune.models import load_model

    meta = load_model(io.BytesIO(content), device="cpu").meta
    assert meta["trial_number"] == winner and meta["selection"]["winner"] == winner
    assert meta["selection"]["rule"].startswith("best mean validation val_loss (lowest)")
    assert [(c["trial"], c["n"]) for c in meta["selection"]["candidates"]] == [
        (c["trial"], 4) for c in sel["candidates"]
    ]

    with serving(create_app(settings, dashboard=False)) as url:
        out = subprocess.run(
            [sys.executable, "-m", "rnntune.service.cli", "status", name, "--api-url", url],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    assert out.returncode == 0, out.stderr
    assert "re-evaluation: top 2 x 2 seeds x 2 folds, 6/6 runs done" in out.stdout, out.stdout
    rows = [line for line in out.stdout.splitlines() if line.strip().startswith("#")]
    assert len(rows) == 2 and sum("<- winner" in line for line in rows) == 1, out.stdout
    (won,) = [line for line in rows if "<- winner" in line]
    assert won.split()[0] == f"#{winner}" and f"±{sel['candidates'][0]['sd']:.6g}" in out.stdout


def test_classification_folds_are_stratified_k_fold_runs_and_a_killed_run_counts_once(env, tmp_path):
    """selection.folds on classification data (issue 29): each candidate's further runs train on
    stratified k-fold folds of train + val; a worker killed in the first run's ticket is replaced,
    the run counts once, and a run re-computed here on the same fold gives the stored value."""
    import threading

    from rnntune.service.data.data_cache import DataCache
    from rnntune.service.spec import parse_spec
    from rnntune.service.trials import selection
    from rnntune.service.trials.recipe import TrialRecord

    body = spec(
        "reeval-digits", n_trials=2, max_epochs=2, hidden=4,
        data={"name": "digits", "params": {}, "window": None}, metric="val_accuracy", direction="maximize",
        selection={"top_k": 2, "seeds": 1, "folds": 3},
    )  # fmt: skip
    name = env.create(body)
    dying = env.faulty_worker("reeval:before:exit", training=None)
    assert dying.wait(timeout=120) == FAULT_EXIT
    workers = [env.worker(), env.worker()]
    try:
        env.wait_state(name, ("done",), 120)
    finally:
        assert stop(*workers) == [0, 0]
    check_lifecycle(env, name)
    reevals = [t for t in env.tickets(name) if t["kind"] == "reeval"]
    assert len(reevals) == 4 and all(t["state"] == "done" for t in reevals)  # 2 candidates x (3 folds - 1)
    assert sorted(t["attempts"] for t in reevals) == [1, 1, 1, 2]
    runs = _runs(env, name)
    assert len(runs) == 6 and all(r["state"] == "complete" for r in runs)
    assert {(r["seed_index"], r["fold"]) for r in runs} == {(0, 0), (0, 1), (0, 2)}

    parsed = parse_spec(body)
    run = next(r for r in runs if r["fold"] == 0)
    settings = Settings(database_url=env.url, data_dir=tmp_path)
    with TestClient(create_app(settings, dashboard=False)) as client:
        best = client.get(f"/v1/studies/{name}/best").json()
        trials = client.get(f"/v1/studies/{name}/trials").json()["items"]
    params = next(t["params"] for t in trials if t["number"] == run["trial_number"])
    value, _ = selection.reevaluate(
        parsed, TrialRecord(run["trial_number"], params, None, {}), seed_index=0, fold=0,
        device="cpu", data_cache=DataCache(), stop=threading.Event(),
    )  # fmt: skip
    assert value == pytest.approx(run["value"], abs=1e-6)
    assert all(c["n"] == 3 for c in best["selection"]["candidates"])
    assert set(best["baselines"]) == {"majority", "logistic"}
