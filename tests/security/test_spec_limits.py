"""Attack 3: specs that would exhaust a worker are refused at submit, each with a 422 naming
the field, the value and the limit (``RNNTUNE_MAX_*``); ``data.params`` typos are 422 too; a grid
over the limit is refused before anything is built."""

from __future__ import annotations

import time

import optuna
import pytest

from rnntune.service import spec as spec_module
from rnntune.service.spec import SpecError, parse_spec

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


def spec(**parts) -> dict:
    base = {"name": "big", "data": {"name": "sine"}, "search_space": SPACE, "budget": {"n_trials": 4}}
    return base | parts


@pytest.fixture(scope="module")
def db_url(sqlite_url):
    return sqlite_url


@pytest.mark.parametrize(
    ("body", "field", "value", "limit"),
    [
        (
            spec(
                model={"bidirectional": True},
                search_space={
                    "hidden_size": {"type": "int", "low": 16, "high": 4096},
                    "num_layers": {"type": "int", "low": 1, "high": 16},
                },
            ),
            "search_space.hidden_size",
            "parameters",
            "RNNTUNE_MAX_MODEL_PARAMS=50000000",
        ),
        (
            spec(search_space={**SPACE, "batch_size": {"type": "categorical", "choices": [64, 65536]}}),
            "search_space.batch_size",
            "batch 65536",
            "RNNTUNE_MAX_BATCH_ELEMENTS=67108864",
        ),
        (
            spec(data={"name": "sine", "params": {"n_series": 100_000_000, "length": 100_000}}),
            "data.params.n_series",
            "values",
            "RNNTUNE_MAX_DATA_ELEMENTS=268435456",
        ),
        (
            spec(sampler={"name": "tpe", "n_ei_candidates": 1e9}),
            "sampler.n_ei_candidates",
            "1000000000",
            "RNNTUNE_MAX_SEARCH_OPTION=10000",
        ),
        (
            spec(pruner={"name": "median", "n_startup_trials": 10**8}),
            "pruner.n_startup_trials",
            "100000000",
            "RNNTUNE_MAX_SEARCH_OPTION=10000",
        ),
        (spec(budget={"n_trials": 10**6}), "budget.n_trials", "1000000", "RNNTUNE_MAX_TRIALS_PER_STUDY=10000"),
    ],
)
def test_a_spec_beyond_a_limit_is_422_naming_field_value_and_limit(client, body, field, value, limit):
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert [".".join(map(str, e["loc"][1:])) for e in detail] == [field], detail
    assert value in detail[0]["msg"] and limit in detail[0]["msg"], detail


def test_a_data_params_typo_is_422_naming_the_key(client):
    r = client.post("/v1/studies", json=spec(data={"name": "sine", "params": {"n_seris": 100}}))
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "data", "params", "n_seris"]
    assert "known: n_series, length, noise, seed" in error["msg"]


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"name": "sine", "params": {"noise": "loud"}}, "noise", "must be a number >= 0"),
        ({"name": "sine", "params": {"length": 1.5}}, "length", "must be an integer >= 2"),
        ({"name": "co2", "params": {"frequency": "daily"}}, "frequency", "must be one of ['monthly', 'weekly']"),
        ({"name": "npz", "dataset": "x", "params": {"scale": "yes"}}, "scale", "must be true or false"),
        ({"name": "text", "dataset": "x", "params": {"delimiter": "::"}}, "delimiter", "must be one character"),
    ],
)
def test_a_data_params_value_of_the_wrong_kind_is_422_naming_it(client, data, field, reason):
    r = client.post("/v1/studies", json=spec(data=data))
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "data", "params", field] and reason in error["msg"], error


def test_an_uploaded_npz_counts_with_its_own_length_and_width(client):
    import io

    import numpy as np

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, X=rng.standard_normal((4, 500, 100)).astype(np.float32), y=np.array([0, 1, 0, 1]))
    r = client.post("/v1/datasets", files={"file": ("wide.npz", buffer.getvalue())})
    assert r.status_code == 201, r.text
    body = spec(data={"name": "npz", "dataset": "wide"}, training={"batch_size": 4096})
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "training", "batch_size"], error
    assert "batch 4096 x window 500 x width 100" in error["msg"] and "RNNTUNE_MAX_BATCH_ELEMENTS" in error["msg"]
    assert "500 steps of 100 features" in error["msg"]
    body["training"] = {"batch_size": 64}
    assert client.post("/v1/studies", json=body).status_code == 201


def test_a_grid_over_the_limit_is_refused_before_it_is_built(client, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the grid sampler was built")

    monkeypatch.setattr(optuna.samplers, "GridSampler", never)
    space = {name: {"type": "int", "low": 1, "high": 10} for name in ("hidden_size", "num_layers", "patience")}
    space |= {"batch_size": {"type": "categorical", "choices": list(range(1, 101))}}
    space |= {"window": {"type": "int", "low": 1, "high": 10}}
    started = time.perf_counter()
    r = client.post("/v1/studies", json=spec(sampler={"name": "grid"}, search_space=space, budget={}))
    assert r.status_code == 422, r.text
    assert "the grid has 1000000 points" in r.text and "RNNTUNE_MAX_GRID_SIZE=100000" in r.text
    assert time.perf_counter() - started < 2.0


def test_the_limits_are_the_operators_to_raise(sqlite_url):
    from rnntune.service.spec import Limits

    body = spec(search_space={**SPACE, "batch_size": {"type": "categorical", "choices": [64, 65536]}})
    with pytest.raises(SpecError, match="RNNTUNE_MAX_BATCH_ELEMENTS"):
        parse_spec(body, Limits())
    assert parse_spec(body, Limits(max_batch_elements=2**31)).search_space["batch_size"].choices == [64, 65536]
    assert parse_spec(body) is not None  # a client checking a file locally does not know the server's limits


@pytest.mark.parametrize("name", ["adding", "co2", "csv", "digits", "npz", "sine", "sunspots", "text"])
def test_data_params_match_what_the_loaders_take(name):
    """The torch-free list the API checks against is the loaders' own."""
    from rnntune.models.data import DataError, load_dataset

    DATA_PARAMS = spec_module.DATA_PARAMS
    assert sorted(DATA_PARAMS) == ["adding", "co2", "csv", "digits", "npz", "sine", "sunspots", "text"]

    with pytest.raises(DataError) as caught:
        load_dataset(name, {"zz_not_a_param": 1})
    known = str(caught.value).partition("known params: ")[2].rstrip(".")
    passed_as_arguments = ("target",)  # data.params.target: the worker passes it as load_dataset(target=...)
    expected = [k for k in DATA_PARAMS[name] if k not in passed_as_arguments]
    assert (known.split(", ") if known != "none" else []) == expected
