"""Spec -> Optuna -> training, in-process on in-memory studies: every sampler and pruner runs a
study to the end, every hyperparameter a spec can search reaches the ``models`` configs, and a
trial is reproducible from its parameters (what the finalize step relies on)."""

from __future__ import annotations

import copy
import warnings

import optuna
import pytest

from rnntune.service.data.data_cache import DataCache
from rnntune.service.search import build_pruner, build_sampler, hyperparameters
from rnntune.service.spec import OPTIMIZERS, PRUNERS, SAMPLERS, SCHEDULERS, parse_spec
from rnntune.service.trials.objective import Objective
from rnntune.service.trials.recipe import build_configs

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DATA = {"name": "sine", "params": {"n_series": 12, "length": 20, "seed": 0}, "window": 8}
TINY = {
    "name": "tiny",
    "data": DATA,
    "model": {"cell": "gru"},
    "search_space": {
        "hidden_size": {"type": "int", "low": 4, "high": 16, "log": True},
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32]},
    },
    "budget": {"n_trials": 4, "max_epochs": 2},
}
PRUNER_OPTIONS = {
    "median": {"n_startup_trials": 1, "n_warmup_steps": 0},
    "percentile": {"percentile": 25.0, "n_startup_trials": 1},
    "successive_halving": {"min_resource": 1},
    "hyperband": {"min_resource": 1},
    "none": {},
}


@pytest.fixture(scope="module")
def cache() -> DataCache:
    return DataCache()


def run_study(spec_dict: dict, cache: DataCache, n_trials: int | None = None, enqueue: list[dict] = ()) -> optuna.Study:
    spec = parse_spec(spec_dict)
    study = optuna.create_study(
        direction=spec.direction, sampler=build_sampler(spec, seed_offset=0), pruner=build_pruner(spec)
    )
    for params in enqueue:
        study.enqueue_trial(params)
    study.optimize(Objective(spec, device="cpu", data_cache=cache), n_trials=n_trials or spec.budget.n_trials)
    return study


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.trials if t.state in states]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_a_study(sampler, cache):
    spec = copy.deepcopy(TINY) | {"sampler": {"name": sampler, "seed": 1}, "pruner": {"name": "none"}}
    if sampler == "grid":  # grid search needs discrete axes: 2 x 2 = 4 points
        spec["search_space"] = {
            "hidden_size": {"type": "categorical", "choices": [4, 8]},
            "lr": {"type": "categorical", "choices": [1e-2, 3e-2]},
        }
    study = run_study(spec, cache)
    assert len(finished(study)) == 4 == len(study.trials)
    assert all(len(t.intermediate_values) == 2 for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # four different points


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_runs_a_study(pruner, cache):
    spec = copy.deepcopy(TINY) | {
        "sampler": {"name": "random", "seed": 2},
        "pruner": {"name": pruner, **PRUNER_OPTIONS[pruner]},
    }
    spec["budget"] = {"n_trials": 4, "max_epochs": 3}
    # two good configurations first, then two that barely learn: the pruners have a reference
    good, bad = {"hidden_size": 16, "lr": 3e-2, "batch_size": 16}, {"hidden_size": 4, "lr": 1e-3, "batch_size": 32}
    study = run_study(spec, cache, enqueue=[good, good | {"hidden_size": 12}, bad, bad | {"hidden_size": 5}])
    assert len(finished(study)) == 4
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    if pruner == "none":
        assert not pruned
    for t in pruned:
        assert 1 <= len(t.intermediate_values) <= 3


CONDITIONAL = {
    "name": "cond",
    "data": DATA,
    "search_space": {
        "optimizer": {"type": "categorical", "choices": list(OPTIMIZERS)},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "momentum": {"type": "float", "low": 0.1, "high": 0.9, "when": {"optimizer": ["sgd", "rmsprop"]}},
        "nesterov": {"type": "categorical", "choices": [True], "when": {"optimizer": "sgd"}},
        "scheduler": {"type": "categorical", "choices": list(SCHEDULERS)},
    },
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 1, "max_epochs": 2},
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_with_its_conditional_params(optimizer, cache):
    spec = parse_spec(CONDITIONAL)
    study = optuna.create_study(sampler=build_sampler(spec, seed_offset=0), pruner=build_pruner(spec))
    study.enqueue_trial({"optimizer": optimizer})
    objective = Objective(spec, device="cpu", data_cache=cache)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    tc = objective.train_config
    assert trial.params["optimizer"] == tc.optimizer == optimizer
    assert ("momentum" in trial.params) == (optimizer in ("sgd", "rmsprop"))
    assert ("nesterov" in trial.params) == (optimizer == "sgd")
    assert tc.momentum == trial.params.get("momentum", 0.0)
    assert tc.nesterov == (optimizer == "sgd")  # searched true, and momentum > 0
    assert tc.lr == trial.params["lr"] and tc.scheduler == trial.params["scheduler"]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_schedule(scheduler, cache):
    spec = parse_spec(CONDITIONAL)
    study = optuna.create_study(sampler=build_sampler(spec, seed_offset=0), pruner=build_pruner(spec))
    study.enqueue_trial({"optimizer": "adam", "scheduler": scheduler})
    objective = Objective(spec, device="cpu", data_cache=cache)
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert objective.train_config.scheduler == scheduler


EVERYTHING = {
    "name": "everything",
    "data": {"name": "sine", "params": {"n_series": 12, "length": 24, "seed": 0}},
    "search_space": {
        "cell": {"type": "categorical", "choices": ["rnn", "lstm", "gru"]},
        "hidden_size": {"type": "int", "low": 4, "high": 12},
        "num_layers": {"type": "int", "low": 1, "high": 2},
        "bidirectional": {"type": "categorical", "choices": [False, True]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
        "nesterov": {"type": "categorical", "choices": [False, True], "when": {"optimizer": "sgd"}},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
        "batch_size": {"type": "categorical", "choices": [8, 16]},
        "clip_norm": {"type": "float", "low": 0.5, "high": 2.0},
        "scheduler": {"type": "categorical", "choices": ["cosine", "step", "plateau"]},
        "patience": {"type": "int", "low": 1, "high": 3},
        "window": {"type": "int", "low": 4, "high": 10, "step": 2},
        "highway": {"type": "categorical", "choices": [False, True]},
        "highway_window": {"type": "int", "low": 2, "high": 12, "when": {"highway": True}},
    },
    "sampler": {"name": "random", "seed": 4},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 3, "max_epochs": 2},
}


def test_every_searchable_hyperparameter_reaches_the_configs(cache):
    from rnntune.service.spec import HYPERPARAMETERS, TEXT_ONLY

    # a new one must be added here (text-only ones: tests/service/test_text_service.py)
    assert set(EVERYTHING["search_space"]) == set(HYPERPARAMETERS) - set(TEXT_ONLY)
    spec = parse_spec(EVERYTHING)
    study = optuna.create_study(sampler=build_sampler(spec, seed_offset=0), pruner=build_pruner(spec))
    study.enqueue_trial({"optimizer": "sgd", "nesterov": True, "cell": "lstm", "bidirectional": True, "num_layers": 2})
    objective = Objective(spec, device="cpu", data_cache=cache)
    for _ in range(3):
        study.optimize(objective, n_trials=1)
        trial = study.trials[-1]
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
        p, mc, tc = trial.params, objective.model_config, objective.train_config
        assert (mc.cell, mc.hidden_size, mc.num_layers, mc.bidirectional, mc.dropout) == (
            p["cell"],
            p["hidden_size"],
            p["num_layers"],
            p["bidirectional"],
            p["dropout"],
        )
        assert (tc.optimizer, tc.lr, tc.weight_decay, tc.batch_size, tc.clip_norm, tc.scheduler, tc.patience) == (
            p["optimizer"],
            p["lr"],
            p["weight_decay"],
            p["batch_size"],
            p["clip_norm"],
            p["scheduler"],
            p["patience"],
        )
        assert tc.momentum == p.get("momentum", 0.0)
        assert tc.nesterov == (p.get("nesterov", False) and p["optimizer"] == "sgd")
        assert cache.get(spec, p["window"]).window == p["window"]
        assert mc.highway == p["highway"]
        if p["highway"]:  # over at most the window
            assert mc.highway_window == min(p["highway_window"], p["window"])
    assert study.trials[0].params["nesterov"] is True and objective.model_config is not None


def test_same_params_and_seed_give_the_same_curve(cache):
    spec = copy.deepcopy(TINY) | {"pruner": {"name": "none"}, "budget": {"n_trials": 1, "max_epochs": 3}}
    params = {"hidden_size": 8, "lr": 1e-2, "batch_size": 16}
    curves = []
    for _ in range(2):
        study = run_study(spec, DataCache(), n_trials=1, enqueue=[params])
        curves.append(study.trials[0].intermediate_values)
    assert curves[0] == curves[1] and len(curves[0]) == 3
    other = run_study(spec | {"seed": 1}, DataCache(), n_trials=1, enqueue=[params])
    assert other.trials[0].intermediate_values != curves[0]  # the training seed matters


def test_a_finished_trial_rebuilds_the_same_configs(cache):
    """``hyperparameters(spec, trial.params)`` is what finalize uses to re-create the best trial."""
    spec = parse_spec(CONDITIONAL | {"budget": {"n_trials": 4, "max_epochs": 1}})
    study = optuna.create_study(sampler=build_sampler(spec, seed_offset=0), pruner=build_pruner(spec))
    objective = Objective(spec, device="cpu", data_cache=cache)
    for _ in range(4):
        study.optimize(objective, n_trials=1)
        trial = study.trials[-1]
        hp = hyperparameters(spec, trial.params)
        rebuilt = build_configs(spec, hp, cache.get(spec, hp["window"]), device="cpu")
        assert rebuilt == (objective.model_config, objective.train_config)
    with pytest.raises(ValueError, match="not in the spec's search_space"):
        hyperparameters(spec, {"depth": 3})
