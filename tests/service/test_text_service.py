"""Text through the service: spec rules, the genetic sampler, uploads of labelled text (422 with
a reason when broken), and a study on an uploaded JSONL whose model predicts from strings."""

from __future__ import annotations

import copy
import io

import optuna
import pytest

from rnntune.service import search
from rnntune.service.spec import SpecError, parse_spec
from rnntune.service.worker import Worker
from tests.conftest import REPO
from tests.factories import study_spec

REVIEWS = REPO / "studies" / "data" / "sentiment-reviews.csv"
TOPICS = REPO / "studies" / "data" / "topic-news.jsonl"

TEXT = {
    "name": "t",
    "metric": "val_f1",
    "data": {"name": "text", "path": str(REVIEWS)},
    "search_space": {
        "embed_dim": {"type": "categorical", "choices": [8, 16]},
        "max_length": {"type": "categorical", "choices": [8, 32]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "budget": {"n_trials": 2, "max_epochs": 2},
}


def test_text_spec_defaults_and_metrics():
    spec = parse_spec(TEXT)
    assert spec.direction == "maximize"
    assert spec.fixed_params()["max_length"] is None
    assert parse_spec(study_spec(TEXT, metric="val_accuracy")).direction == "maximize"
    fixed = study_spec(TEXT, search_space={"lr": TEXT["search_space"]["lr"]})
    fixed["data"] = {**TEXT["data"], "params": {"max_length": 20}}
    assert parse_spec(fixed).fixed_params()["max_length"] == 20


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"data": {"name": "sine"}}, "metric", "val_f1 needs a classification data set"),
        ({"metric": "val_mae"}, "metric", "val_mae needs a regression data set"),
        ({"data": {"name": "text"}}, "data", "needs a path or an uploaded dataset"),
        ({"data": {"name": "text", "path": "x.csv", "window": 5}}, "data.window", "window does not apply to text"),
        (
            {"data": {"name": "text", "path": "x.csv", "params": {"max_length": 9}}},
            "search_space.max_length",
            "also fixed",
        ),
        ({"model": {"freeze_embeddings": True}}, "model", "needs a pre-trained matrix"),
        (
            {"data": {"name": "text", "path": "x", "params": {"embeddings": "e.npy"}}},
            "search_space.embed_dim",
            "the width is the matrix's",
        ),
    ],
)
def test_bad_text_specs_name_field_and_reason(changes, field, reason):
    with pytest.raises(SpecError) as err:
        parse_spec(study_spec(TEXT, **changes))
    assert field in [loc for loc, _ in err.value.errors], err.value.errors
    assert reason in str(err.value)


def test_text_hyperparameters_need_text_data():
    spec = study_spec(name="s", model={"embed_dim": 8})
    with pytest.raises(SpecError, match="embed_dim applies to data.name 'text' only"):
        parse_spec(spec)


def test_genetic_sampler_is_nsga2_with_its_options():
    spec = parse_spec(
        study_spec(TEXT, sampler={"name": "genetic", "seed": 1, "population_size": 4, "mutation_prob": 0.3})
    )
    sampler = search.build_sampler(spec, seed_offset=2)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler)
    with pytest.raises(SpecError, match="sampler"):
        parse_spec(study_spec(TEXT, sampler={"name": "genetic", "population_size": 1}))


def test_text_hyperparameters_reach_the_configs_and_the_data():
    from rnntune.service.data.data_cache import DataCache
    from rnntune.service.trials.objective import Objective

    spec = parse_spec(
        study_spec(
            TEXT,
            search_space={**TEXT["search_space"], "bidirectional": {"type": "categorical", "choices": [False, True]}},
        )
    )
    study = optuna.create_study(direction="maximize", sampler=search.build_sampler(spec, seed_offset=0))
    study.enqueue_trial({"embed_dim": 8, "max_length": 8, "lr": 5e-3, "bidirectional": True})
    cache = DataCache(data_roots=[REVIEWS.parent], allow_root_text=True)
    objective = Objective(spec, device="cpu", data_cache=cache)
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
        assert set(trial.user_attrs["val_metrics"]) == {"accuracy", "f1"}
    p, mc = study.trials[-1].params, objective.model_config
    assert (mc.embed_dim, mc.bidirectional, mc.vocab_size is not None) == (p["embed_dim"], p["bidirectional"], True)
    assert cache.get(spec, None, 8).x_train.shape[1] == 8  # max_length truncates; cached per value
    assert cache.get(spec, None, 32).x_train.shape[1] > 8


@pytest.fixture(scope="module")
def db_url(sqlite_url):
    return sqlite_url


def upload(client, content: bytes, filename: str, **fields):
    return client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)


@pytest.mark.parametrize(
    ("content", "filename", "fields", "reason"),
    [
        (
            b"text,label\ncaf\xe9,pos\n",
            "latin.csv",
            {"format": "text"},
            "not UTF-8 text: an invalid byte on line 2 (column 4)",  # the byte itself is not quoted
        ),
        (b'{"text": "a", "label": 1}\n[1, 2]\n', "x.jsonl", {}, "line 2 is not a JSON object"),
        (b'{"text": "a", "label": 1}\n{"text": \n', "x.jsonl", {}, "line 2 is not JSON"),
        (b"text\nonly one column\n", "one.csv", {"format": "text"}, "needs a text and a label column"),
        (b"text,label\n", "empty.csv", {"format": "text"}, "no examples"),
    ],
)
def test_broken_text_uploads_are_422_with_the_reason(client, content, filename, fields, reason):
    r = upload(client, content, filename, **fields)
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]


def test_uploaded_jsonl_trains_and_the_model_predicts_strings(client, settings):
    r = upload(client, TOPICS.read_bytes(), "topic-news.jsonl")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == "text" and body["info"]["layout"] == "jsonl" and body["info"]["rows"] == 800
    assert body["info"]["columns"] == ["text", "label"]
    spec = {
        "name": "topics",
        "metric": "val_accuracy",
        "data": {"name": "text", "dataset": "topic-news"},
        "model": {"cell": "gru", "hidden_size": 16, "embed_dim": 16},
        "training": {"clip_norm": 1.0},
        "search_space": {"lr": {"type": "float", "low": 5e-3, "high": 2e-2, "log": True}},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2, "max_epochs": 2},
    }
    bad = copy.deepcopy(spec) | {"name": "topics-bad"}
    bad["data"]["params"] = {"text_column": "body"}
    r = client.post("/v1/studies", json=bad)
    assert r.status_code == 422 and "text_column" in r.text and "column 'body' is not in dataset" in r.text, r.text
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 201, r.text
    Worker(settings, exit_when_idle=True, threads=1, device="cpu").run()
    best = client.get("/v1/studies/topics/best").json()
    assert set(best["val_metrics"]) >= {"accuracy", "f1"}
    model_bytes = client.get("/v1/studies/topics/best/model").content

    from rnntune.models import load_model

    predictor = load_model(io.BytesIO(model_bytes), device="cpu")
    assert predictor.labels == ["business", "science", "sports", "world"]
    assert predictor.meta["data_meta"]["labels"] == predictor.labels
    out = predictor.predict(["The striker won the final.", "Oil prices cut quarterly profits."])
    assert len(out) == 2 and set(out) <= set(predictor.labels)
