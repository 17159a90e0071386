"""Several objectives: validation, pruning on the first objective, the Pareto front end to end."""

from __future__ import annotations

import random
import subprocess

import httpx2
import optuna
import pytest
import yaml
from fastapi.testclient import TestClient

from rnntune.service.api.app import create_app
from rnntune.service.config import Settings
from rnntune.service.data.data_cache import DataCache
from rnntune.service.spec import SpecError, parse_spec
from rnntune.service.trials import pareto
from rnntune.service.trials.objective import Objective
from tests.conftest import rnntune
from tests.factories import study_spec
from tests.test_e2e import free_port, start_api, stop

optuna.logging.set_verbosity(optuna.logging.WARNING)

SINE = {"name": "sine", "params": {"n_series": 60, "length": 30, "seed": 0}, "window": 16}


MULTI_OBJECTIVE = {
    "name": "mo",
    "objectives": ["val_loss", "n_params"],
    "data": SINE,
    "model": {"cell": "gru"},
    "search_space": {
        "hidden_size": {"type": "int", "low": 2, "high": 24, "log": True},
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    },
    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 3},
    "pruner": {"name": "median", "n_startup_trials": 2},
    "budget": {"n_trials": 8, "max_epochs": 3},
}


def spec_dict(name: str = "mo", **extra) -> dict:
    return study_spec(MULTI_OBJECTIVE, name=name, **extra)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"objectives": ["val_loss", "flops"]}, "unknown objective 'flops'"),
        ({"objectives": ["val_loss", "n_params", "n_params"]}, "distinct"),
        ({"objectives": ["val_loss"]}, "two or more"),
        ({"objectives": ["n_params", "val_loss"]}, "must be a val metric"),
        ({"objectives": ["val_loss", "val_accuracy"]}, "needs a classification data set"),
        ({"metric": "val_mae"}, "metric='val_mae'"),
        ({"sampler": {"name": "cmaes"}}, "cmaes sampler optimises one objective"),
    ],
)
def test_bad_objectives_name_the_field(change, reason):
    with pytest.raises(SpecError) as info:
        parse_spec(spec_dict(**change))
    assert [loc for loc, _ in info.value.errors] == ["objectives"], info.value.errors
    assert reason in info.value.errors[0][1]


def test_objectives_set_metric_directions_and_stay_optional():
    spec = parse_spec(spec_dict(objectives=["val_loss", "latency_ms", "val_mae"]))
    assert spec.metric == "val_loss" and spec.multi_objective
    assert spec.directions() == ["minimize", "minimize", "minimize"]
    single = parse_spec({k: v for k, v in spec_dict().items() if k != "objectives"})
    assert not single.multi_objective and single.objective_names() == ["val_loss"]
    # the worker re-validates the stored (dumped) spec
    assert parse_spec(spec.model_dump(mode="json")).objective_names() == ["val_loss", "latency_ms", "val_mae"]


def test_single_objective_spec_hashes_as_before_objectives_existed():
    """Re-submitting a study's spec after an upgrade finds the same study, not a 409."""
    from rnntune.service.studies.registry import spec_hash

    single = parse_spec({k: v for k, v in spec_dict().items() if k != "objectives"})
    assert "objectives" not in single.canonical_json()
    assert spec_hash(single) != spec_hash(parse_spec(spec_dict()))


def test_api_answers_422_naming_objectives(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'v.db'}")
    with TestClient(create_app(settings, dashboard=False)) as client:
        r = client.post("/v1/studies", json=spec_dict(objectives=["val_loss", "flops"]))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "objectives"]


# --- pruning on the first objective ------------------------------------------------------------

PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3),
    "percentile": lambda: optuna.pruners.PercentilePruner(25.0),
    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(max_resource=8),
}


@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_first_objective_is_pruned_as_optuna_prunes_one_objective(pruner):
    """The same per-epoch curves, fed to a single-objective study through Optuna's own
    report/should_prune and to a two-objective study through pareto.report/should_prune, are
    pruned at the same trials and epochs (the multi-objective one samples with TPE, which must
    not trip over its pruned trials)."""
    rng = random.Random(0)
    curves = [[rng.random() + 1.0 / epoch for epoch in range(1, 9)] for _ in range(30)]
    runs = {}
    for multi in (False, True):
        study = optuna.create_study(
            study_name="same-name",  # hyperband picks a trial's bracket from the study name
            directions=["minimize", "minimize"] if multi else ["minimize"],
            pruner=PRUNERS[pruner](),
            sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
        )
        for curve in curves:

            def objective(trial, curve=curve, multi=multi):
                trial.suggest_float("x", 0, 1)
                for epoch, value in enumerate(curve, 1):
                    if multi:
                        pareto.report(trial, value, epoch)
                        prune = pareto.should_prune(trial)
                    else:
                        trial.report(value, epoch)
                        prune = trial.should_prune()
                    if prune:
                        raise optuna.TrialPruned()
                return (min(curve), 1.0) if multi else min(curve)

            study.optimize(objective, n_trials=1)
        trials = study.get_trials()
        if multi:
            assert all(not t.intermediate_values for t in trials)  # Optuna's own table stays empty
            trials = [pareto.first_objective_trial(t) for t in trials]
        runs[multi] = [(t.state.name, len(t.intermediate_values)) for t in trials]
    assert runs[True] == runs[False]
    assert {state for state, _ in runs[True]} == {"COMPLETE", "PRUNED"}


def test_front_mask_turns_every_objective_to_minimise():
    values = [[1.0, 0.9], [2.0, 0.95], [1.0, 0.8], [3.0, 0.1], [0.5, None], [float("nan"), 1.0]]
    assert pareto.front_mask(values, ["minimize", "maximize"]) == [True, True, False, False, False, False]
    assert pareto.front_mask([], ["minimize", "minimize"]) == []


def test_objective_returns_each_objective_and_records_curve():
    spec = parse_spec(spec_dict(objectives=["val_loss", "n_params", "latency_ms", "val_mae"]))
    study = optuna.create_study(directions=spec.directions(), sampler=optuna.samplers.RandomSampler(0))
    objective = Objective(spec, device="cpu", data_cache=DataCache())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
    val_loss, n_params, latency_ms, val_mae = trial.values
    hidden = trial.params["hidden_size"]
    highway = min(24, SINE["window"]) + 1  # the default highway: its window's weights + a bias
    assert n_params == 3 * (hidden * 1 + hidden * hidden + 2 * hidden) + hidden + 1 + highway  # GRU + head + highway
    assert 0 < latency_ms < 1000
    curve = pareto.first_objective_trial(trial).intermediate_values
    assert sorted(curve) == [1, 2, 3] and min(curve.values()) == pytest.approx(val_loss)
    assert trial.user_attrs["val_metrics"]["mae"] == pytest.approx(val_mae)
    assert trial.user_attrs["objectives"]["n_params"] == n_params


# --- end to end on PostgreSQL with two workers -------------------------------------------------------


@pytest.mark.slow
def test_pareto_study_with_two_workers_on_postgres(pg_url, tmp_path):
    name = "mo-e2e"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"RNNTUNE_DATABASE_URL": pg_url, "RNNTUNE_POLL_INTERVAL_S": "0.3"}
    api = start_api(pg_url, port)
    workers = [rnntune("worker", "--threads", "1", env=env) for _ in range(2)]
    # Good configurations first, so the pruner has a reference before the bad ones run.
    good, bad = {"hidden_size": 16, "lr": 3e-2}, {"hidden_size": 2, "lr": 1e-3}
    spec = spec_dict(name, initial_trials=[good, good | {"hidden_size": 12}, bad, bad | {"hidden_size": 3}])
    spec["pruner"] = {"name": "median", "n_startup_trials": 1}
    try:
        path = tmp_path / "mo.yaml"
        path.write_text(yaml.safe_dump(spec))
        submit = rnntune(
            "submit",
            str(path),
            "--wait",
            "--api-url",
            base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out, _ = submit.communicate(timeout=240)
        assert submit.returncode == 0, out
        client = httpx2.Client(base_url=base, timeout=30)
        front = client.get(f"/v1/studies/{name}/pareto").json()
        best = client.get(f"/v1/studies/{name}/best").json()
        status = client.get(f"/v1/studies/{name}").json()
    finally:
        codes = stop(*workers, api)
    assert codes[:2] == [0, 0], codes

    study = optuna.load_study(study_name=name, storage=pg_url)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert study.metric_names == ["val_loss", "n_params"]  # the dashboard's labels
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 8 and "PRUNED" in states, states
    assert {t.number for t in study.best_trials} == {t["number"] for t in front["trials"]}
    for t in front["trials"]:
        assert t["values"] == pytest.approx(
            dict(zip(["val_loss", "n_params"], study.trials[t["number"]].values, strict=True))
        )
        assert t["epochs"] >= 1
    assert front["objectives"] == [
        {"name": "val_loss", "direction": "minimize"},
        {"name": "n_params", "direction": "minimize"},
    ]
    # the single-objective endpoints keep working, on the first objective
    assert status["state"] == "done" and status["finished"] == 8
    first = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: (t.values, t.number))
    assert status["best_value"] == pytest.approx(first.values[0])
    assert best["trial_number"] == first.number and best["model"] is not None
    assert best["objectives"]["n_params"] == first.values[1]
    assert status["best_trial"]["curve"] and status["best_trial"]["epochs"] >= 1

    # export another trial of the front, retrained here as finalize retrains the best
    other = max(front["trials"], key=lambda t: t["values"]["val_loss"])
    path = tmp_path / "front.pt"
    api = start_api(pg_url, port)
    try:
        export = rnntune(
            *("export", name, "--trial", str(other["number"]), "-o", str(path), "--api-url", base),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out, _ = export.communicate(timeout=120)
    finally:
        stop(api)
    assert export.returncode == 0, out
    assert f"trial #{other['number']} retrained" in out
    from rnntune.models import load_model

    model = load_model(path)
    assert model.meta["trial_number"] == other["number"]
    assert model.meta["trial_objectives"]["n_params"] == other["values"]["n_params"]
    assert model.meta["val_metrics"]["loss"] == pytest.approx(other["values"]["val_loss"], rel=1e-4)
    assert sum(p.numel() for p in model.model.parameters()) == other["values"]["n_params"]
