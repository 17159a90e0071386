"""The study spec: the examples are valid, and each bad spec names its field and reason."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rnntune.service.spec import SpecError, StudySpec, grid_size, load_spec, parse_spec
from tests.factories import study_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "studies").rglob("*.yaml"))

BASE = {
    "name": "t",
    "data": {"name": "sine"},
    "search_space": {
        "hidden_size": {"type": "int", "low": 8, "high": 64, "log": True},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"optimizer": "sgd"}},
    },
    "budget": {"n_trials": 5},
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.budget.n_trials >= 1
    assert spec.name == path.stem or path.parent.name == "classic"


def test_defaults_fill_in():
    spec = parse_spec(BASE)
    assert spec.direction == "minimize"
    assert spec.sampler.name == "tpe" and spec.pruner.name == "median"
    fixed = spec.fixed_params()
    assert fixed["cell"] == "lstm" and fixed["momentum"] == 0.0


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"search_space__lr": {"type": "float", "low": 0.1, "high": 0.01}}, "search_space.lr", "low must be <= high"),
        (
            {"search_space__lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            "search_space.lr",
            "log scale needs low > 0",
        ),
        ({"search_space__units": {"type": "int", "low": 1, "high": 4}}, "search_space", "unknown parameter 'units'"),
        (
            {"search_space__optimizer": {"type": "categorical", "choices": []}},
            "search_space.optimizer.choices",
            "at least 1",
        ),
        (
            {"search_space__optimizer": {"type": "categorical", "choices": ["adam", "lbfgs"]}},
            "search_space",
            "optimizer must be one of",
        ),
        ({"sampler": {"name": "grid"}}, "search_space.lr", "grid search needs discrete values"),
        ({"budget__n_trials": 0}, "budget.n_trials", "n_trials must be > 0"),
        ({"budget__n_trials": -3}, "budget.n_trials", "n_trials must be > 0"),
        ({"sampler": {"name": "hillclimb"}}, "sampler.name", "unknown sampler 'hillclimb'"),
        ({"pruner": {"name": "median", "n_warmup_steps": -1}}, "pruner.n_warmup_steps", "must be >= 0"),
        ({"sampler": {"name": "tpe", "bogus_option": 1}}, "sampler", "bogus_option"),
        ({"data__name": "imagenet"}, "data.name", "unknown data set 'imagenet'"),
        ({"name": "Bad Name!"}, "name", "name must match"),
        ({"model": {"cell": "transformer"}}, "model", "cell must be one of"),
        ({"model": {"cell": "gru", "hidden_size": 0}}, "model", "hidden_size must be in"),
        ({"model": {"hidden_size": 32}}, "search_space.hidden_size", "also fixed in model.hidden_size"),
        (
            {"search_space__momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"nope": "sgd"}}},
            "search_space",
            "momentum.when",
        ),
        ({"direction": "maximize"}, "direction", "val_loss is to minimize"),
        ({"initial_trials": [{"lr": 5.0}]}, "initial_trials[0].lr", "outside"),
        ({"budget__max_epochs": 0}, "budget.max_epochs", "greater than or equal to 1"),
    ],
)
def test_bad_spec_names_field_and_reason(changes, field, reason):
    spec = study_spec(BASE, **changes)
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    fields = [loc for loc, _ in err.value.errors]
    assert field in fields, err.value.errors
    assert reason in str(err.value), str(err.value)


def test_grid_over_continuous_range_is_rejected_and_discrete_grid_sized():
    spec = study_spec(BASE, sampler={"name": "grid"})
    with pytest.raises(SpecError, match=r"search_space.lr: grid search needs discrete values"):
        parse_spec(spec)
    spec["search_space"] = {
        "hidden_size": {"type": "int", "low": 16, "high": 128, "step": 16},
        "lr": {"type": "categorical", "choices": [1e-2, 1e-3, 1e-4]},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    }
    spec["budget"] = {}
    parsed = parse_spec(spec)
    assert grid_size(parsed) == 8 * 3 * 3 == parsed.budget.n_trials
    spec["budget"] = {"n_trials": 100}
    with pytest.raises(SpecError, match="exceeds the grid's 72 points"):
        parse_spec(spec)


def test_domain_lists_are_the_models_own():
    """Each allowed-value list exists once (rnntune.models.config): the spec holds no copy."""
    from rnntune.models import config
    from rnntune.service import spec

    for name in ("CELLS", "OPTIMIZERS", "SCHEDULERS", "DATASETS", "FILE_DATASETS", "CLASSIFICATION_DATASETS"):
        assert getattr(spec, name) is getattr(config, name), name


def test_defaults_of_unsearched_hyperparameters_are_the_configs_own():
    """Defaults are written once, in ModelConfig / TrainConfig: a changed field default (made here
    before the spec module is imported, as an edit of models/config.py would make it) is what a
    study trains with when its spec neither fixes nor searches that hyperparameter, and what the
    published spec schema says."""
    code = """
import json
from rnntune.models.config import ModelConfig, TrainConfig
ModelConfig.__dataclass_fields__["hidden_size"].default = 96
TrainConfig.__dataclass_fields__["lr"].default = 0.02
TrainConfig.__dataclass_fields__["patience"].default = 4
from rnntune.service.spec import StudySpec, parse_spec
props = StudySpec.model_json_schema()["properties"]
fixed = parse_spec({"name": "t", "data": {"name": "sine"}, "budget": {"n_trials": 1}}).fixed_params()
print(json.dumps({
    "schema": [props["model"]["properties"]["hidden_size"]["default"], props["training"]["properties"]["lr"]["default"],
               props["training"]["properties"]["patience"]],
    "trained": [fixed["hidden_size"], fixed["lr"], fixed["patience"]],
}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["schema"] == [96, 0.02, {"type": "integer", "minimum": 1, "maximum": 10000, "default": 4}]
    assert out["trained"] == [96, 0.02, 4]


def test_the_spec_schema_publishes_each_config_default():
    import dataclasses

    from rnntune.models.config import ModelConfig, TrainConfig
    from rnntune.service.spec import HYPERPARAMETERS

    props = StudySpec.model_json_schema()["properties"]
    for config, group in ((ModelConfig, "model"), (TrainConfig, "training")):
        published = props[group]["properties"]
        for field in dataclasses.fields(config):
            if field.name == "highway":  # the spec's own default: on (for forecasting data), benchmarks/highway.py
                assert published[field.name]["default"] is True and field.default is False
            elif field.name in HYPERPARAMETERS:
                assert published[field.name]["default"] == field.default, field.name
        assert {n for n, hp in HYPERPARAMETERS.items() if hp.group == group} <= set(published)


def test_json_and_yaml_files_load_the_same(tmp_path):
    import json

    (tmp_path / "s.json").write_text(json.dumps(BASE))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(BASE))
    assert load_spec(tmp_path / "s.json") == load_spec(tmp_path / "s.yaml") == StudySpec.model_validate(BASE)


def test_cli_rejects_bad_spec_with_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(study_spec(BASE, search_space__lr={"type": "float", "low": 0.5, "high": 0.1})))
    r = subprocess.run(
        [sys.executable, "-m", "rnntune.service.cli", "validate", str(bad)], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "search_space.lr" in lines[0] and "low must be <= high" in lines[0], r.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "rnntune.service.cli", "submit", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"name": "Upper_Case"},
        {"data": {"name": "no-such-data"}},
        {"sampler": {"name": "annealing"}},
        {"pruner": {"name": "nope"}},
        {"model": {"cell": "transformer"}},
        {"model": {"hidden_size": 0}},
        {"model": {"dropout": 1.0}},
        {"training": {"optimizer": "lbfgs"}},
        {"training": {"lr": 100.0}},
    ],
)
def test_openapi_schema_rejects_what_the_api_rejects(changes):
    """The published schema carries the name pattern, the enums and the numeric bounds, so a client
    (or schemathesis) that obeys it does not generate specs the API refuses."""
    import jsonschema

    schema = StudySpec.model_json_schema()
    jsonschema.Draft202012Validator(schema).validate(BASE)  # the base spec is valid under the schema
    bad = {**copy.deepcopy(BASE), **changes}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(bad)
    with pytest.raises(SpecError):
        parse_spec(bad)


def test_openapi_document_carries_the_spec_constraints():
    from rnntune.service.api.app import create_app
    from rnntune.service.config import Settings

    doc = create_app(Settings(database_url="sqlite://")).openapi()
    spec = doc["components"]["schemas"]["StudySpec"]
    assert spec["properties"]["name"]["pattern"] == "^[a-z0-9][a-z0-9-]{0,63}$"
    assert "sine" in doc["components"]["schemas"]["DataSpec"]["properties"]["name"]["enum"]
    assert spec["properties"]["model"]["properties"]["cell"]["enum"] == ["rnn", "lstm", "gru"]


def test_a_stored_spec_with_keys_this_version_does_not_know_is_read_without_them(caplog):
    """A newer version's spec (a rolling upgrade) still lists, runs and guards its data here; a
    new submission with the same keys is refused."""
    from rnntune.service.spec import load_stored

    stored = parse_spec(BASE).model_dump(mode="json")
    newer = copy.deepcopy(stored)
    newer["ensemble"] = {"members": 3, "vote": "mean"}
    newer["budget"]["max_reevaluations"] = 9
    newer["data"]["shuffle"] = True
    newer["search_space"]["lr"]["granularity"] = 0.01  # inside a union member (its error loc has the tag)
    with caplog.at_level("WARNING", logger="rnntune.spec"):
        spec = load_stored(newer)
    assert spec == load_stored(stored) == parse_spec(BASE)
    assert newer["ensemble"] == {"members": 3, "vote": "mean"}  # the stored data is left as it is
    for key in ("ensemble", "budget.max_reevaluations", "data.shuffle", "search_space.lr.float.granularity"):
        assert key in caplog.text
    with pytest.raises(SpecError) as exc:
        parse_spec(newer)
    assert {"ensemble", "budget.max_reevaluations", "data.shuffle"} <= {loc for loc, _ in exc.value.errors}


def test_a_stored_spec_from_before_newer_fields_reads_with_their_defaults():
    from rnntune.service.spec import load_stored

    older = parse_spec(BASE).model_dump(mode="json")
    for key in ("objective", "objectives", "selection", "labels", "priority", "description"):
        del older[key]
    del older["data"]["plugin"], older["data"]["dataset"]
    spec = load_stored(older)
    assert spec.objectives is None and spec.objective is None and spec.labels == [] and spec.priority == 0
    assert spec.data.plugin is None and spec.canonical_json() == parse_spec(BASE).canonical_json()


def test_a_stored_spec_that_is_invalid_for_other_reasons_still_raises():
    from pydantic import ValidationError

    from rnntune.service.spec import load_stored

    broken = parse_spec(BASE).model_dump(mode="json") | {"ensemble": {"members": 3}}
    broken["budget"]["n_trials"] = 0
    with pytest.raises(ValidationError, match="n_trials must be > 0"):
        load_stored(broken)
