"""The highway as a hyperparameter: on by default for forecasting data, searchable like ``cell``,
refused where it cannot apply, built into the trial's model and counted in the size limit."""

from __future__ import annotations

import optuna
import pytest

from rnntune.models.recurrent import SequenceModel
from rnntune.service.data.data_cache import DataCache
from rnntune.service.search import hyperparameters, suggest
from rnntune.service.spec import Limits, SpecError, check_limits, model_params_upper, parse_spec
from rnntune.service.trials.recipe import build_configs


def spec(data: dict, **fields) -> dict:
    return {"name": "hw", "data": data, "budget": {"n_trials": 2, "max_epochs": 1}, **fields}


SINE = {"name": "sine", "params": {"n_series": 20, "length": 30}, "window": 12}


def test_forecasting_models_get_the_highway_by_default_and_others_none():
    cache = DataCache()
    parsed = parse_spec(spec(SINE))
    data = cache.get(parsed, 12)
    model_config, _ = build_configs(parsed, hyperparameters(parsed, {}), data, device="cpu")
    assert model_config.highway and model_config.highway_window == 12  # at most the window
    off = parse_spec(spec(SINE, model={"highway": False}))
    assert not build_configs(off, hyperparameters(off, {}), data, device="cpu")[0].highway
    digits = parse_spec(spec({"name": "digits"}))
    digits_data = cache.get(digits, None)
    assert not build_configs(digits, hyperparameters(digits, {}), digits_data, device="cpu")[0].highway


def test_the_highway_is_searched_as_a_categorical():
    parsed = parse_spec(
        spec(
            SINE,
            search_space={
                "highway": {"type": "categorical", "choices": [True, False]},
                "highway_window": {"type": "int", "low": 2, "high": 8},
            },
        )
    )
    data = DataCache().get(parsed, 12)
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        hp = suggest(trial, parsed)
        config, _ = build_configs(parsed, hp, data, device="cpu")
        assert config.highway == hp["highway"]
        assert not config.highway or config.highway_window == hp["highway_window"]
        seen.add(config.highway)
        study.tell(trial, 1.0)
    assert seen == {True, False}


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"model": {"highway": True}}, "model.highway"),
        ({"model": {"highway_window": 4}}, "model.highway_window"),
        ({"search_space": {"highway": {"type": "categorical", "choices": [False, True]}}}, "search_space.highway"),
        ({"search_space": {"highway_window": {"type": "int", "low": 2, "high": 4}}}, "search_space.highway_window"),
    ],
)
def test_a_highway_on_data_that_is_not_forecasting_is_refused_naming_the_field(fields, where):
    with pytest.raises(SpecError, match=f"{where}: the highway applies to forecasting data"):
        parse_spec(spec({"name": "digits"}, **fields))
    parse_spec(spec({"name": "digits"}, model={"highway": False}))  # off is always fine


def test_the_size_limit_counts_the_highway():
    on = parse_spec(spec({"name": "sunspots", "window": 24}, model={"hidden_size": 16, "highway_window": 10}))
    off = parse_spec(spec({"name": "sunspots", "window": 24}, model={"hidden_size": 16, "highway": False}))
    data = DataCache().get(on, 24)
    built = SequenceModel(build_configs(on, hyperparameters(on, {}), data, device="cpu")[0])
    assert model_params_upper(on) == built.num_parameters() == model_params_upper(off) + 10 + 1
    searched = parse_spec(
        spec(
            {"name": "sunspots", "window": 24},
            model={"hidden_size": 1},
            search_space={"highway_window": {"type": "int", "low": 1, "high": 90000}},
        )
    )
    with pytest.raises(ValueError, match="RNNTUNE_MAX_MODEL_PARAMS=50000"):
        check_limits(searched, Limits(max_model_params=50_000))
