"""The study spec: one pydantic schema for the API, the CLI and ``studies/*.yaml``.

A spec names the data, fixes some hyperparameters (``model``, ``training``), searches others
(``search_space``), and says how to search (``sampler``, ``pruner``) and how long (``budget``).
This module validates all of it up front, so a bad spec is a 422 / exit 2 naming the field, never a
failed trial. It imports no torch (the API must start fast): the allowed cells, optimisers,
schedulers and data sets are the models' own, from the torch-free ``rnntune.models.config``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rnntune.models.config import (
    CELLS,
    CLASSIFICATION_DATASETS,
    DATASETS,
    FILE_DATASETS,
    FOLD_DATASETS,
    KFOLD_DATASETS,
    OPTIMIZERS,
    SCHEDULERS,
    ModelConfig,
    TrainConfig,
)
from rnntune.service import space
from rnntune.service.finite import bad_numbers, check_numbers
from rnntune.service.space import (  # noqa: F401 (the parameter kinds are part of the spec's API)
    MAX_GRID_POINTS,
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    Scalar,
)

log = logging.getLogger("rnntune.spec")

# Integers the database stores in 32-bit columns (priority, budget counts); seeds numpy accepts.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1

# ---------------------------------------------------------------------------------------------
# What can be tuned. Each hyperparameter has a kind, a domain and a default used when it is
# neither fixed nor searched. The same names are the keys of ``models`` configs.

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "qmc", "genetic")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
PLUGIN_DATASET = "plugin"  # data.name: plugin, data.plugin: an installed loader (it says the task)
METRICS = {"val_loss": "minimize", "val_mae": "minimize", "val_accuracy": "maximize", "val_f1": "maximize"}
# Each data set's own options (``data.params``): an unknown key is a 422 at submit, not a failed
# study in a worker. Checked against ``rnntune.models.data`` by tests/security/test_spec_limits.py.
TEXT_PARAMS = (
    "path",
    "format",
    "text_column",
    "label_column",
    "delimiter",
    "lowercase",
    "min_freq",
    "max_size",
    "max_length",
    "embeddings",
    "embeddings_vocab",
)
DATA_PARAMS: dict[str, tuple[str, ...]] = {
    "sine": ("n_series", "length", "noise", "seed", "period"),
    "adding": ("n_samples", "length", "seed"),
    "sunspots": ("period",),
    "co2": ("frequency", "period"),
    "digits": (),
    "csv": ("path", "delimiter", "target", "period"),
    "npz": ("path", "scale"),
    "text": TEXT_PARAMS,
}
# What each option holds: ("int", low) | ("number", low) | ("bool",) | ("char",) (one character)
# | ("name",) (a non-empty string) | ("ref",) (an upload's name or id, or a path) | ("choice", ...).
# None is accepted where the loader's default is None.
DATA_PARAM_KINDS: dict[str, tuple] = {
    "n_series": ("int", 3),
    "n_samples": ("int", 3),
    "length": ("int", 2),
    "seed": ("int", None),
    "noise": ("number", 0),
    "period": ("int", 1),  # forecasting: the season length in steps (the seasonal-naive baseline's)
    "frequency": ("choice", "monthly", "weekly"),
    "path": ("name",),
    "target": ("name",),
    "delimiter": ("char",),
    "scale": ("bool",),
    "format": ("choice", None, "csv", "jsonl"),
    "text_column": ("name",),
    "label_column": ("name",),
    "lowercase": ("bool",),
    "min_freq": ("int", 1),
    "max_size": ("int", 1),
    "max_length": ("int", 1),
    "embeddings": ("ref",),
    "embeddings_vocab": ("ref",),
}
NULLABLE_PARAMS = ("max_size", "max_length", "embeddings", "embeddings_vocab", "format", "period")


def _check_data_param(key: str, value: Any) -> None:
    """Raise ValueError("params.<key>: ...") when ``value`` is not what the loader takes."""
    kind, *args = DATA_PARAM_KINDS[key]
    if value is None and key in NULLABLE_PARAMS:
        return
    where = f"params.{key}"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or (args[0] is not None and value < args[0]):
            low = "" if args[0] is None else f" >= {args[0]}"
            raise ValueError(f"{where}: must be an integer{low}, but got {value!r}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= args[0]:
            raise ValueError(f"{where}: must be a number >= {args[0]}, but got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: must be true or false, but got {value!r}")
    elif kind == "char":
        if not isinstance(value, str) or len(value) != 1:
            raise ValueError(f"{where}: must be one character, but got {value!r}")
    elif kind == "name":
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: must be a non-empty string, but got {value!r}")
    elif kind == "ref":
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise ValueError(f"{where}: must name an uploaded file (name or id) or a path, but got {value!r}")
    elif value not in args:
        raise ValueError(f"{where}: must be one of {[a for a in args if a is not None]}, but got {value!r}")


# Width of each built-in data set's input (features per step); file data sets vary.
BUILTIN_FEATURES = {"sine": 1, "adding": 2, "sunspots": 1, "co2": 1, "digits": 8}

# What ``objectives`` may list: the val metrics (reported every epoch) and two costs of the trained
# model, measured once at the end: its parameter count and its batch-1 inference time.
OBJECTIVES = {**METRICS, "n_params": "minimize", "latency_ms": "minimize"}


class _Hp(BaseModel):
    kind: Literal["int", "float", "bool", "str"]
    group: Literal["model", "training", "data"]
    default: Any = None  # model / training: set from the config field below
    choices: tuple | None = None
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive unless high_open
    high_open: bool = False


def _config_defaults(table: dict[str, _Hp]) -> dict[str, _Hp]:
    """A model or training hyperparameter is the ``ModelConfig`` / ``TrainConfig`` field of its
    name, and its default is that field's: read from the dataclasses, so it is written once."""
    fields = {f.name: f for config in (ModelConfig, TrainConfig) for f in dataclasses.fields(config)}
    out = {}
    for name, hp in table.items():
        if hp.group != "data":
            if name not in fields or fields[name].default is dataclasses.MISSING:
                raise TypeError(f"hyperparameter {name!r} is not a ModelConfig / TrainConfig field with a default")
            hp = hp.model_copy(update={"default": fields[name].default})
        out[name] = hp
    return out


HYPERPARAMETERS: dict[str, _Hp] = _config_defaults(
    {
        "cell": _Hp(kind="str", group="model", choices=CELLS),
        "hidden_size": _Hp(kind="int", group="model", low=1, high=4096),
        "num_layers": _Hp(kind="int", group="model", low=1, high=16),
        "bidirectional": _Hp(kind="bool", group="model"),
        "dropout": _Hp(kind="float", group="model", low=0.0, high=1.0, high_open=True),
        "optimizer": _Hp(kind="str", group="training", choices=OPTIMIZERS),
        "lr": _Hp(kind="float", group="training", low=1e-8, high=10.0),
        "momentum": _Hp(kind="float", group="training", low=0.0, high=1.0, high_open=True),
        "nesterov": _Hp(kind="bool", group="training"),
        "weight_decay": _Hp(kind="float", group="training", low=0.0, high=1.0),
        "batch_size": _Hp(kind="int", group="training", low=1, high=65536),
        "clip_norm": _Hp(kind="float", group="training", low=1e-6, high=1e6),
        "scheduler": _Hp(kind="str", group="training", choices=SCHEDULERS),
        "patience": _Hp(kind="int", group="training", low=1, high=10000),
        "window": _Hp(kind="int", group="data", default=None, low=1, high=100000),  # None: the data set's
        # text only (data.name: text)
        "embed_dim": _Hp(kind="int", group="model", low=1, high=4096),  # None: 64, or the matrix's width
        "freeze_embeddings": _Hp(kind="bool", group="model"),
        "max_length": _Hp(kind="int", group="data", default=None, low=1, high=1_000_000),  # tokens kept
    }
)
TEXT_ONLY = ("embed_dim", "freeze_embeddings", "max_length")


def _check_value(name: str, value: Any) -> Any:
    """Check one value against a hyperparameter's domain; return it (bool/int/float coerced)."""
    hp = HYPERPARAMETERS[name]
    if value is None and hp.default is None:
        return None
    if hp.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, but got {value!r}")
        return value
    if hp.kind == "str":
        if value not in hp.choices:
            raise ValueError(f"{name} must be one of {list(hp.choices)}, but got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, but got {value!r}")
    if hp.kind == "int" and float(value) != int(value):
        raise ValueError(f"{name} must be an integer, but got {value!r}")
    value = int(value) if hp.kind == "int" else float(value)
    too_high = value >= hp.high if hp.high_open else value > hp.high
    if value < hp.low or too_high:
        bracket = ")" if hp.high_open else "]"
        raise ValueError(f"{name} must be in [{hp.low:g}, {hp.high:g}{bracket}, but got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Sections.


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(
        description=f"a built-in data set ({', '.join(DATASETS)}), or plugin",
        json_schema_extra={"enum": [*DATASETS, PLUGIN_DATASET]},
    )
    params: dict[str, Any] = Field(default_factory=dict, description="data-set options (sizes, seed, ...)")
    window: int | None = Field(default=None, ge=1, description="forecasting: input steps")
    horizon: int = Field(default=1, ge=1, description="forecasting: steps ahead")
    target: str | None = Field(default=None, description="csv: the target column")
    inputs: list[str] | None = Field(default=None, description="csv: input columns (default: target)")
    path: str | None = Field(default=None, description="csv / npz: a file every worker can read")
    dataset: str | None = Field(
        default=None,
        description="csv / npz: an uploaded data set (POST /v1/datasets), by name or id; name is its format",
    )
    plugin: str | None = Field(
        default=None, description="name: plugin: an installed rnntune.datasets entry point, by its name"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS and name != PLUGIN_DATASET:
            raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}, {PLUGIN_DATASET}")
        return name

    @model_validator(mode="after")
    def _files(self) -> DataSpec:
        _check_data_plugin(self)
        known = DATA_PARAMS.get(self.name)  # None: a plugin's params are its own
        for key in self.params if known is not None else ():
            if key not in known:
                raise ValueError(
                    f"params.{key}: unknown option of data set {self.name!r}; known: {', '.join(known) or 'none'}"
                )
            _check_data_param(key, self.params[key])
        if self.dataset is not None:
            if self.name not in FILE_DATASETS:
                raise ValueError(
                    f"dataset: an uploaded file is read by name 'csv', 'npz' or 'text' (its format), but got name={self.name!r}"
                )
            if self.path or self.params.get("path"):
                raise ValueError("dataset: give either dataset (an uploaded file) or path (a shared file), not both")
        elif self.name in FILE_DATASETS and not (self.path or self.params.get("path")):
            raise ValueError(f"data set {self.name!r} needs a path or an uploaded dataset")
        if self.name == "csv" and not (self.target or self.params.get("target")):
            raise ValueError("data set 'csv' needs a target column")
        return self


def _check_data_plugin(d: DataSpec) -> None:
    from rnntune.service.plugins import check_name

    if (d.name == "plugin") != (d.plugin is not None):
        raise ValueError("plugin: give data.plugin (an installed data-set plugin) exactly when data.name is 'plugin'")
    if d.plugin is not None:
        try:
            check_name(d.plugin)
        except ValueError as exc:
            raise ValueError(f"plugin: {exc}") from None


class ObjectiveSpec(BaseModel):
    """The user's own training: an installed objective plugin, or a command (a script)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    plugin: str | None = Field(default=None, description="an installed rnntune.objectives entry point, by its name")
    command: list[str] | None = Field(
        default=None, description="program and arguments, no shell; {name} is replaced by the trial's value"
    )
    timeout_s: float | None = Field(default=None, gt=0, description="command: per-trial time limit")

    @model_validator(mode="after")
    def _one(self) -> ObjectiveSpec:
        from rnntune.service.plugins import check_name

        if (self.plugin is None) == (self.command is None):
            raise ValueError("give exactly one of objective.plugin and objective.command")
        if self.plugin is not None:
            check_name(self.plugin)
            if self.timeout_s is not None:
                raise ValueError("timeout_s applies to objective.command only")
        return self


class SamplerSpec(BaseModel):
    """``name`` and ``seed``; any other key is passed to the Optuna sampler's constructor."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = Field(default="tpe", json_schema_extra={"enum": list(SAMPLERS)})
    seed: int | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
        return name

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PrunerSpec(BaseModel):
    """``name``; any other key is passed to the Optuna pruner's constructor."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = Field(default="median", json_schema_extra={"enum": list(PRUNERS)})

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in PRUNERS:
            raise ValueError(f"unknown pruner {name!r}; known: {', '.join(PRUNERS)}")
        return name

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    n_trials: int | None = Field(
        default=None, le=INT32_MAX, description="finished trials to run (grid: defaults to the grid size)"
    )
    max_epochs: int = Field(default=20, ge=1, le=100000, description="epochs per trial (the pruning steps)")
    timeout_s: float | None = Field(default=None, gt=0, description="stop starting trials after this")
    max_failed_trials: int = Field(
        default=10, ge=1, le=INT32_MAX, description="the study fails when this many trials fail"
    )
    max_parallel: int | None = Field(default=None, ge=1, le=INT32_MAX, description="trials running at once")

    @field_validator("n_trials")
    @classmethod
    def _positive(cls, n: int | None) -> int | None:
        if n is not None and n <= 0:
            raise ValueError(f"n_trials must be > 0, but got {n}")
        return n


class SelectionSpec(BaseModel):
    """How the winner is chosen once the search budget is spent. The default (1, 1, 1) keeps the
    single best validation score; otherwise the ``top_k`` best complete trials are trained again
    and the one with the best mean wins (docs/architecture.md, "Re-evaluated winners")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    top_k: int = Field(default=1, ge=1, description="the best complete trials trained again (candidates)")
    seeds: int = Field(default=1, ge=1, description="training seeds per candidate, the search trial's own run included")
    folds: int = Field(
        default=1,
        ge=1,
        description="folds of the train + val data: rolling-origin (walk-forward) for forecasting, stratified "
        "k-fold for classification, k-fold for other regression and text; the last is the search's own split",
    )

    @property
    def is_default(self) -> bool:
        return self.top_k == 1 and self.seeds == 1 and self.folds == 1

    @property
    def n_runs(self) -> int:
        """Runs per candidate (its search trial included) times candidates."""
        return self.top_k * self.seeds * self.folds


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # names are matched with fullmatch: no trailing "\n"


def _hp_schema(hp: _Hp) -> dict[str, Any]:
    """One hyperparameter's domain as JSON Schema (what the validators above enforce), and the
    value a study trains with when the spec neither fixes nor searches it."""
    if hp.kind == "bool":
        return {"type": "boolean", "default": hp.default}
    if hp.kind == "str":
        return {"type": "string", "enum": list(hp.choices or ()), "default": hp.default}
    cast = int if hp.kind == "int" else float
    out: dict[str, Any] = {"type": "integer" if hp.kind == "int" else "number", "minimum": cast(hp.low)}
    out["exclusiveMaximum" if hp.high_open else "maximum"] = cast(hp.high)
    if hp.default is None:
        return {"anyOf": [out, {"type": "null"}], "default": None}
    return {**out, "default": hp.default}


def _fixed_schema(schema: dict[str, Any], group: str) -> None:
    """The OpenAPI schema of ``model`` / ``training``: each known hyperparameter's type and bounds,
    so clients (and schemathesis) generate values the API accepts."""
    schema["properties"] = {name: _hp_schema(hp) for name, hp in HYPERPARAMETERS.items() if hp.group == group}
    if group == "model":  # or an installed model plugin, by its entry-point name
        from rnntune.service.plugins import NAME_RE as PLUGIN_NAME_RE

        schema["properties"]["plugin"] = {"type": "string", "pattern": PLUGIN_NAME_RE.pattern}


class StudySpec(BaseModel):
    """A study: what to train, what to search, how, and for how long."""

    # The schema says what the validator does: data is required unless objective is given.
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "anyOf": [
                {"required": ["data"], "properties": {"data": {"type": "object"}}},
                {"required": ["objective"], "properties": {"objective": {"type": "object"}}},
            ]
        },
    )
    name: str = Field(
        description="unique; lower-case letters, digits and '-', at most 64",
        json_schema_extra={"pattern": NAME_RE.pattern},
    )
    direction: Literal["minimize", "maximize"] | None = Field(default=None, description="default: the metric's")
    metric: str = Field(
        default="val_loss",
        description=f"one of {', '.join(METRICS)} (an objective plugin or command: its own metric's name)",
    )
    objectives: list[str] | None = Field(
        default=None,
        description=f"several objectives (a multi-objective study, searched for its Pareto front): two or more of "
        f"{', '.join(OBJECTIVES)}; the first is a val metric, the one pruned on and the study's metric",
    )
    objective: ObjectiveSpec | None = Field(default=None, description="your own training: a plugin or a command")
    data: DataSpec | None = Field(default=None, description="required unless objective is given")
    model: dict[str, Any] = Field(
        default_factory=dict,
        description="fixed model hyperparameters; {plugin: NAME, ...}: an installed model plugin and its own values",
        json_schema_extra=lambda s: _fixed_schema(s, "model"),
    )
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="fixed training hyperparameters",
        json_schema_extra=lambda s: _fixed_schema(s, "training"),
    )
    search_space: dict[str, Param] = Field(default_factory=dict)
    initial_trials: list[dict[str, Any]] = Field(default_factory=list, description="run first, as given")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    selection: SelectionSpec = Field(
        default_factory=SelectionSpec,
        description="re-evaluate the top_k trials with more seeds (and folds) and keep the best mean",
    )
    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="training seed: same params + seed, same curve")
    labels: list[str] = Field(default_factory=list, description="only workers with all these labels run it")
    priority: int = Field(
        default=0, ge=-INT32_MAX, le=INT32_MAX, description="higher runs first when studies share workers"
    )
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_numbers(data)  # every number, free-form dicts included (service/finite.py)
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"name must match {NAME_RE.pattern}, but got {name!r}")
        return name

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        if metric not in METRICS and not CUSTOM_METRIC_RE.fullmatch(metric):
            raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
        return metric

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, objectives: list[str] | None) -> list[str] | None:
        if objectives is None:
            return None
        for name in objectives:
            if name not in OBJECTIVES:
                raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
        if len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives must be distinct, but got {objectives}")
        if len(objectives) < 2:
            raise ValueError(f"objectives needs two or more (one objective is the metric), but got {objectives}")
        if objectives[0] not in METRICS:
            raise ValueError(
                f"the first objective is pruned on every epoch, so it must be a val metric ({', '.join(METRICS)}), "
                f"but got {objectives[0]!r}"
            )
        return objectives

    @field_validator("model", "training")
    @classmethod
    def _fixed(cls, values: dict[str, Any], info) -> dict[str, Any]:
        if info.field_name == "model" and "plugin" in values:
            return _plugin_model(values)
        out = {}
        for key, value in values.items():
            hp = HYPERPARAMETERS.get(key)
            if hp is None or hp.group != info.field_name:
                known = [k for k, h in HYPERPARAMETERS.items() if h.group == info.field_name]
                raise ValueError(f"unknown parameter {key!r}; known: {', '.join(known)}")
            out[key] = _check_value(key, value)
        return out

    @field_validator("search_space")
    @classmethod
    def _space(cls, space: dict[str, Param], info) -> dict[str, Param]:
        custom = _custom_names(info.data)  # a plugin's or command's own parameters
        for name, param in space.items():
            if custom is not None and custom(name):
                continue
            if name not in HYPERPARAMETERS:
                raise ValueError(f"unknown parameter {name!r}; known: {', '.join(HYPERPARAMETERS)}")
            try:
                _check_param_domain(name, HYPERPARAMETERS[name], param)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            for other in param.when_values():
                if other not in space or other == name:
                    raise ValueError(f"{name}.when: {other!r} must be another searched parameter")
        # Suggest order: a conditional parameter after the ones its ``when`` reads.
        ordered: dict[str, Param] = {}
        pending = dict(space)
        while pending:
            ready = [n for n, p in pending.items() if all(o in ordered for o in p.when_values())]
            if not ready:
                raise ValueError(f"'when' conditions form a cycle among {sorted(pending)}")
            for n in ready:
                ordered[n] = pending.pop(n)
        return ordered

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> StudySpec:
        limits = (info.context or {}).get("limits")
        if self.objective is not None:
            if self.objectives is not None:
                raise ValueError(
                    "objectives: several objectives need rnntune's own training (n_params, latency_ms); "
                    "an objective plugin or command returns one value"
                )
            _check_objective(self)
        elif self.data is None:
            raise ValueError("data: required (only a study with an objective plugin or command has no data)")
        if self.objectives is not None:
            if "metric" in self.model_fields_set and self.metric != self.objectives[0]:
                raise ValueError(
                    f"objectives: the first objective is the study's metric, but got metric={self.metric!r} "
                    f"and objectives[0]={self.objectives[0]!r}"
                )
            self.metric = self.objectives[0]
            if self.sampler.name == "cmaes":
                raise ValueError(
                    "objectives: the cmaes sampler optimises one objective; use tpe, gp, genetic or random"
                )
        expected = METRICS.get(self.metric)
        if expected is None and self.objective is None:
            raise ValueError(f"metric: unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.direction is None:
            if expected is None:
                raise ValueError(f"direction: required for your own metric {self.metric!r} (minimize or maximize)")
            self.direction = expected
        elif expected is not None and self.objective is None and self.direction != expected:
            raise ValueError(f"direction: {self.metric} is to {expected}, but got direction={self.direction!r}")
        self._selection(limits)
        if self.objective is not None:
            return self._rest(limits)
        self._builtin()
        return self._rest(limits)

    def _selection(self, limits: Limits | None) -> None:
        sel = self.selection
        if sel.is_default:
            return
        if self.objective is not None:
            raise ValueError(
                "selection: re-evaluation retrains with rnntune's own training; an objective plugin or command "
                "has no seed or folds of ours to vary (leave selection out)"
            )
        if self.multi_objective:
            raise ValueError(
                "selection: a study with several objectives keeps its Pareto front (GET .../pareto), not one winner "
                "by a mean (leave selection out)"
            )
        if sel.folds > 1 and self.data.name not in FOLD_DATASETS + KFOLD_DATASETS:
            raise ValueError(
                f"selection.folds: folds need a data set rnntune splits ({', '.join(FOLD_DATASETS + KFOLD_DATASETS)}), "
                f"but got data.name={self.data.name!r}; use folds: 1"
            )
        if limits is not None and sel.n_runs > limits.max_selection_runs:
            raise ValueError(
                f"selection: top_k x seeds x folds = {sel.top_k} x {sel.seeds} x {sel.folds} = {sel.n_runs} runs, "
                f"over this server's limit RNNTUNE_MAX_SELECTION_RUNS={limits.max_selection_runs}"
            )

    def _builtin(self) -> None:
        """Checks that apply to rnntune's own training (a built-in or plugin model)."""
        classifies = self.data.name in CLASSIFICATION_DATASETS or self.data.name == PLUGIN_DATASET
        where = "objectives" if self.objectives else "metric"
        for name in self.objective_names():
            if name in ("val_accuracy", "val_f1") and not classifies:
                raise ValueError(
                    f"{where}: {name} needs a classification data set, but got data.name={self.data.name!r}"
                )
            if self.data.name in ("digits", "text") and name == "val_mae":
                raise ValueError(f"{where}: val_mae needs a regression data set, but data.name={self.data.name!r}")
        _check_text(self)
        for name in self.search_space:
            if name not in HYPERPARAMETERS:
                continue  # a model plugin's own parameter
            group = HYPERPARAMETERS[name].group
            fixed = self.model if group == "model" else self.training if group == "training" else {}
            if name in fixed:
                raise ValueError(f"search_space.{name}: also fixed in {group}.{name}; keep one")
            if name == "window" and self.data.window is not None:
                raise ValueError("search_space.window: also fixed in data.window; keep one")
            if name == "max_length" and self.data.params.get("max_length") is not None:
                raise ValueError("search_space.max_length: also fixed in data.params.max_length; keep one")

    def _rest(self, limits: Limits | None) -> StudySpec:
        if limits is not None and len(self.initial_trials) > limits.max_initial_trials:
            raise ValueError(
                f"initial_trials: {len(self.initial_trials)} entries, over this server's limit "
                f"RNNTUNE_MAX_INITIAL_TRIALS={limits.max_initial_trials}"
            )
        for i, params in enumerate(self.initial_trials):
            for key, value in params.items():
                if key not in self.search_space:
                    raise ValueError(f"initial_trials[{i}].{key}: not in search_space")
                _check_choice(f"initial_trials[{i}].{key}", self.search_space[key], value)
        if self.sampler.name == "grid":
            size = grid_size(self)  # raises on continuous ranges; counts, never builds
            if limits is not None and size > limits.max_grid_size:
                raise ValueError(
                    f"search_space: the grid has {size} points, over this server's limit "
                    f"RNNTUNE_MAX_GRID_SIZE={limits.max_grid_size}"
                )
            if size > MAX_GRID_POINTS:
                raise ValueError(f"search_space: the grid has {size} points, more than {MAX_GRID_POINTS}")
            if self.budget.n_trials is None:
                self.budget.n_trials = size
            elif self.budget.n_trials > size:
                raise ValueError(f"budget.n_trials: {self.budget.n_trials} exceeds the grid's {size} points")
        elif self.budget.n_trials is None:
            raise ValueError("budget.n_trials: required (only grid search has a natural size)")
        if len(self.initial_trials) > self.budget.n_trials:
            raise ValueError(
                f"initial_trials: {len(self.initial_trials)} given but budget.n_trials is {self.budget.n_trials}"
            )
        if limits is not None:
            check_limits(self, limits)  # before anything is built from the spec
        _check_options(self)
        return self

    # --- helpers used by the API and the worker -----------------------------------------
    def objective_names(self) -> list[str]:
        """What each trial returns, in order: ``objectives``, or the one ``metric``."""
        return list(self.objectives) if self.objectives else [self.metric]

    def directions(self) -> list[str]:
        """The Optuna study's direction per objective."""
        if not self.objectives:  # one objective: a built-in metric's, or a plugin's / command's own
            return [self.direction]
        return [OBJECTIVES[name] for name in self.objective_names()]

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_names()) > 1

    def fixed_params(self) -> dict[str, Any]:
        """Every hyperparameter's value when not searched: the spec's fixed value or the default.
        An objective plugin or command gets only the searched ones (``search.suggest``)."""
        if self.objective is not None:
            return {}
        values = {name: hp.default for name, hp in HYPERPARAMETERS.items()}
        values.update({k: v for k, v in self.model.items() if k != "plugin"})
        values.update(self.training)
        if self.data.window is not None:
            values["window"] = self.data.window
        if self.data.name == "text":
            values["max_length"] = self.data.params.get("max_length")
        return values

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        if data.get("objectives") is None:  # a single-objective spec hashes as it did before `objectives`
            data.pop("objectives", None)
        if self.selection.is_default:  # and one that keeps the single best as it did before `selection`
            data.pop("selection", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


CUSTOM_METRIC_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # an objective plugin's or command's value
CUSTOM_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _plugin_model(values: dict[str, Any]) -> dict[str, Any]:
    """``model: {plugin: NAME, ...}``: the other keys are the plugin's fixed parameters."""
    from rnntune.service.plugins import check_name

    try:
        check_name(values["plugin"])
    except ValueError as exc:
        raise ValueError(f"plugin: {exc}") from None
    for key, value in values.items():
        if not CUSTOM_PARAM_RE.fullmatch(key):
            raise ValueError(f"{key!r}: a model plugin's parameter is a plain identifier")
        if key != "plugin" and not isinstance(value, (bool, int, float, str, type(None))):
            raise ValueError(f"{key}: a model plugin's fixed parameter is a number, string or boolean")
    return dict(values)


def _custom_names(fields: dict[str, Any]):
    """For search_space validation: a predicate for the names that belong to a plugin or a
    command rather than to rnntune (None: built-in training, every name must be known)."""
    if fields.get("objective") is not None:
        return lambda name: True  # the user's code: every parameter is its own
    if "plugin" in (fields.get("model") or {}):
        # a model plugin: rnntune still trains (training and data parameters keep their
        # domains); the model's parameters, known names or new ones, are the plugin's
        return lambda name: name not in HYPERPARAMETERS or HYPERPARAMETERS[name].group == "model"
    return None


def _check_objective(spec: StudySpec) -> None:
    """An objective plugin or command: no built-in model, training or data."""
    for field in ("model", "training"):
        if getattr(spec, field):
            raise ValueError(f"{field}: an objective plugin or command trains itself; put its values in search_space")
    if spec.data is not None:
        raise ValueError("data: an objective plugin or command loads its own data")
    for name in spec.search_space:
        if not CUSTOM_PARAM_RE.fullmatch(name):
            raise ValueError(f"search_space.{name}: a parameter name is a plain identifier")
    if spec.objective.command is not None:
        from rnntune.service.command import check_command

        try:
            check_command(spec.objective.command, spec.search_space)
        except ValueError as exc:
            raise ValueError(f"objective.{exc}") from None


def _check_text(spec: StudySpec) -> None:
    """Text-only hyperparameters need text data; window does not apply to text."""
    searched = set(spec.search_space)
    if spec.data.name != "text":
        for name in TEXT_ONLY:
            if name in searched or name in spec.model:
                where = f"search_space.{name}" if name in searched else "model"
                raise ValueError(f"{where}: {name} applies to data.name 'text' only, but got {spec.data.name!r}")
        return
    if "window" in searched or spec.data.window is not None:
        where = "search_space.window" if "window" in searched else "data.window"
        raise ValueError(f"{where}: window does not apply to text; truncate with max_length")
    params = spec.data.params
    has_matrix = params.get("embeddings") is not None
    if has_matrix and "embed_dim" in searched:
        raise ValueError(
            "search_space.embed_dim: with data.params.embeddings the width is the matrix's; do not search it"
        )
    freeze = spec.model.get("freeze_embeddings") or "freeze_embeddings" in searched
    if freeze and not has_matrix:
        where = "search_space.freeze_embeddings" if "freeze_embeddings" in searched else "model"
        raise ValueError(
            f"{where}: freeze_embeddings needs a pre-trained matrix (data.params.embeddings and embeddings_vocab)"
        )
    if has_matrix != (params.get("embeddings_vocab") is not None):
        missing = "embeddings_vocab" if has_matrix else "embeddings"
        raise ValueError(
            f"data.params.{missing}: embeddings and embeddings_vocab go together (a matrix and its tokens)"
        )


def _check_param_domain(name: str, hp: _Hp, param: Param) -> None:
    if isinstance(param, CategoricalParam):
        for choice in param.choices:
            _check_value(name, choice)
        return
    if hp.kind in ("str", "bool"):
        raise ValueError(f"{hp.kind} parameter: use type categorical with choices")
    if hp.kind == "int" and isinstance(param, FloatParam):
        raise ValueError("integer parameter: use type int (or categorical)")
    _check_value(name, param.low)
    _check_value(name, param.high)


def _check_choice(where: str, param: Param, value: Any) -> None:
    if isinstance(param, CategoricalParam):
        if value not in param.choices:
            raise ValueError(f"{where}: {value!r} is not one of {param.choices}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not param.low <= value <= param.high:
        raise ValueError(f"{where}: {value!r} is outside [{param.low}, {param.high}]")


def grid_size(spec: StudySpec) -> int:
    """Points of the spec's grid search, counted without building it (:func:`space.grid_size`)."""
    return space.grid_size(spec.search_space)


def _check_options(spec: StudySpec) -> None:
    """Build the sampler and pruner once so that a bad option is caught here, not in a worker."""
    from rnntune.service import search  # optuna import deferred: the CLI's --help stays fast

    problems = search.check_options(spec)  # types and domains the constructors leave unchecked
    if problems:
        raise ValueError(problems[0])
    try:
        search.build_sampler(spec, seed_offset=0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sampler: {exc}") from None
    try:
        search.build_pruner(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pruner: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Loading and error formatting.


class SpecError(ValueError):
    """A spec that cannot be used; ``errors`` lists (field, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in errors))


def format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("float", "int", "categorical"))
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # whole-spec checks say where in their message: "budget.n_trials: ..."
            head, sep, rest = msg.partition(": ")
            if sep and _LOC_RE.match(head) and head.split(".")[0].split("[")[0] in StudySpec.model_fields:
                loc, msg = head, rest
        elif loc == "data":  # so do the data section's: "dataset: ..." -> data.dataset
            head, sep, rest = msg.partition(": ")
            if sep and head.split(".")[0] in DataSpec.model_fields:
                loc, msg = f"data.{head}", rest
        out.append((loc, msg))
    return out


_LOC_RE = re.compile(r"^[a-z_]+(\[\d+\])?(\.[a-z_0-9]+)*$")


_STORED: dict[str, StudySpec] = {}
_BROKEN: dict[str, str] = {}  # spec_hash -> why that stored spec does not parse
_STORED_MAX = 4096


class BrokenSpec(ValueError):
    """A study's stored spec no longer parses (an older version let a bad value through, or a
    row was edited): the study is shown with this reason, and workers fail it rather than run it."""


def stored_spec(row: Any) -> StudySpec:
    """A study row's spec, parsed once per process: the stored JSON was validated at submit, and a
    study's spec never changes (``row.spec_hash`` is its digest), so GETs and the queue read typed
    fields instead of dicts and never re-validate (which builds a sampler). Raises
    :class:`BrokenSpec` (also remembered per digest) when it no longer parses."""
    spec = _STORED.get(row.spec_hash)
    if spec is not None:
        return spec
    reason = _BROKEN.get(row.spec_hash)
    if reason is None:
        try:
            spec = load_stored(row.spec)
        except (ValueError, TypeError, AttributeError) as exc:  # ValidationError is a ValueError
            reason = _problem(exc)
        else:
            if len(_STORED) >= _STORED_MAX:
                _STORED.clear()
            _STORED[row.spec_hash] = spec
            return spec
        if len(_BROKEN) >= _STORED_MAX:
            _BROKEN.clear()
        _BROKEN[row.spec_hash] = reason
    raise BrokenSpec(reason)


def try_stored_spec(row: Any) -> StudySpec | None:
    """:func:`stored_spec`, or None when the stored spec no longer parses (readers that must
    never fail: lists, metrics, cancel, the data-set guard)."""
    try:
        return stored_spec(row)
    except BrokenSpec:
        return None


def broken_reason(row: Any) -> str | None:
    """Why a study's stored spec does not parse (None: it does)."""
    try:
        stored_spec(row)
    except BrokenSpec as exc:
        return str(exc)
    return None


def stored_spec_problem(data: Any) -> str | None:
    """Why ``data`` (a stored spec) cannot be read back as a StudySpec, or None."""
    try:
        load_stored(data)
    except (ValueError, TypeError, AttributeError) as exc:
        return _problem(exc)
    return None


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in format_errors(exc))
        return f"the stored spec no longer parses: {errors}"
    return f"the stored spec no longer parses ({type(exc).__name__})"  # not a mapping at all, say


def load_stored(data: dict[str, Any]) -> StudySpec:
    """A spec this service stored (validated when it was submitted), read back as a StudySpec.

    A spec stored by an older version lacks the fields added since: they take their defaults. Keys
    this version does not know (a newer version's, met during a rolling upgrade) are left out with
    a warning rather than refused, so the study can still be read, listed and run; a new spec
    (``parse_spec``) is still refused for them."""
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if not unknown or len(unknown) < exc.error_count():
            raise
    known = copy.deepcopy(data)
    for loc in unknown:
        _drop(known, loc)
    log.warning(
        "the stored spec of %r has keys this version does not know, left out: %s",
        data.get("name"),
        ", ".join(".".join(str(p) for p in loc) for loc in unknown),
    )
    return StudySpec.model_validate(known)


def _drop(data: Any, loc: tuple[int | str, ...]) -> None:
    """Delete the key at ``loc`` (a pydantic error location; a union's tag such as ``float`` in
    ``search_space.lr.float.step`` is not a key of the data and is skipped)."""
    *path, key = loc
    for part in path:
        if (isinstance(data, dict) and part in data) or (isinstance(data, list) and isinstance(part, int)):
            data = data[part]
    if isinstance(data, dict):
        data.pop(key, None)


def parse_spec(data: Any, limits: Limits | None = None) -> StudySpec:
    """Validate a decoded spec (a dict); raise :class:`SpecError` naming each bad field.

    ``limits``: this server's (``Settings.limits``), checked by the API before anything is built
    from the spec; None (a client checking a file, a worker re-reading a stored spec) skips them."""
    if not isinstance(data, dict):
        raise SpecError([("", f"a spec must be a mapping, but got {type(data).__name__}")])
    if limits is not None:
        size = len(json.dumps(data, default=str, separators=(",", ":")))
        if size > limits.max_spec_kb * 1024:
            raise SpecError(
                [
                    (
                        "",
                        f"the spec is {size} bytes once parsed, over this server's limit RNNTUNE_MAX_SPEC_KB={limits.max_spec_kb}",
                    )
                ]
            )
    numbers = bad_numbers(data)  # every one named, before any field is read
    if numbers:
        raise SpecError(numbers)
    try:
        return StudySpec.model_validate(data, context={"limits": limits})
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


class _PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a spec never needs them, and an alias bomb (a few
    hundred bytes that expand to megabytes) needs nothing else."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors (&name) and aliases (*name) are not allowed in a spec", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` minus anchors and aliases (raises yaml.YAMLError on either)."""
    return yaml.load(text, Loader=_PlainLoader)


def load_spec(path: str | Path) -> StudySpec:
    """Read a YAML or JSON spec file (JSON is YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([("", f"cannot read {path}: {exc.strerror or exc}")]) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError([("", f"{path} is not valid YAML/JSON: {exc}")]) from None
    return parse_spec(data)


# ---------------------------------------------------------------------------------------------
# What this server lets a spec ask of a worker: limits (``RNNTUNE_MAX_*``) and file paths
# (``RNNTUNE_DATA_ROOTS``). Each refusal names the field, the value and the setting.


@dataclass(frozen=True)
class Limits:
    """Per-spec limits; ``Settings.limits`` fills them from ``RNNTUNE_MAX_*``. The defaults are
    the settings' defaults, sized so that one worker on a 24 GiB machine survives any spec."""

    max_trials_per_study: int = 10_000
    max_epochs_per_trial: int = 1_000
    max_grid_size: int = 100_000
    max_spec_kb: int = 64
    max_model_params: int = 50_000_000
    max_batch_elements: int = 2**26
    max_data_elements: int = 2**28
    max_search_option: int = 10_000
    max_selection_runs: int = 50
    max_classes: int = 1000
    max_vocab: int = 100_000
    max_text_length: int = 512
    max_text_cells: int = 2**27
    max_initial_trials: int = 1000


_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _upper(spec: StudySpec, name: str) -> Any:
    """The largest value a hyperparameter can take in this spec (searched: its upper bound)."""
    param = spec.search_space.get(name)
    if param is None:
        return spec.fixed_params()[name]
    if isinstance(param, CategoricalParam):
        if name == "cell":
            return max(param.choices, key=lambda c: _GATES.get(c, 0))
        values = [c for c in param.choices if c is not None]
        return max(values) if values else None
    return param.high


def _n_features(spec: StudySpec) -> int:
    """Input width per step, as far as the spec tells (a file's own width is checked on upload)."""
    d = spec.data
    if d.name in BUILTIN_FEATURES:
        return BUILTIN_FEATURES[d.name]
    if d.name == "csv":
        return len({*(d.inputs or []), d.target or d.params.get("target")})
    if d.name == "text":
        return _upper(spec, "embed_dim") or 64
    return 1


def _window_upper(spec: StudySpec, limits: Limits | None = None) -> int | None:
    """The longest sequence a trial feeds the model, when the spec tells (None: the file's)."""
    d = spec.data
    if d.name == "text":  # unset: the loader keeps RNNTUNE_MAX_TEXT_LENGTH tokens
        return _upper(spec, "max_length") or d.params.get("max_length") or (limits or Limits()).max_text_length
    if "window" in spec.search_space:
        return _upper(spec, "window")
    if d.window is not None:
        return d.window
    length = d.params.get("length")
    if d.name == "adding":
        return length if isinstance(length, int) else 50
    if d.name == "digits":
        return 8
    if d.name == "sine":
        return min(48, length) if isinstance(length, int) else 48
    return {"sunspots": 24, "co2": 52, "csv": 24}.get(d.name)  # the loaders' defaults (at most); npz: its T


def _n_outputs(spec: StudySpec, limits: Limits) -> int:
    """The head's width: forecasting horizon x targets, the classes, or (a file the spec cannot
    see into: a path's .npz, a text file's labels) the most classes this server allows."""
    d = spec.data
    if d.name == "digits":
        return 10
    if d.name in ("sine", "sunspots", "co2", "csv"):
        return d.horizon
    if d.name in ("npz", "text"):
        return limits.max_classes
    return 1  # adding, and a data-set plugin's own


def _vocab_upper(spec: StudySpec, limits: Limits) -> int:
    """Rows of a text model's embedding: the vocabulary's cap plus <pad> and <unk>."""
    return min(spec.data.params.get("max_size") or limits.max_vocab, limits.max_vocab) + 2


def model_params_upper(
    spec: StudySpec, n_features: int | None = None, n_outputs: int | None = None, limits: Limits | None = None
) -> int:
    """Parameters of the largest model the spec can build (every size at its upper bound): a text
    model's embedding (vocabulary x embed_dim), the recurrent layers and the head its outputs
    imply. ``n_features`` / ``n_outputs``: the input width and head width when known from the
    file (an uploaded .npz)."""
    limits = limits or Limits()
    hidden, layers = int(_upper(spec, "hidden_size")), int(_upper(spec, "num_layers"))
    directions = 2 if _upper(spec, "bidirectional") else 1
    gates = _GATES[_upper(spec, "cell")]
    n, width = 0, n_features or _n_features(spec)
    if spec.data.name == "text":
        n += _vocab_upper(spec, limits) * width  # the embedding; width is embed_dim
    for _ in range(layers):  # per layer and direction: gates x (W_ih, W_hh, two biases)
        n += directions * gates * (hidden * (width + hidden) + 2 * hidden)
        width = hidden * directions
    outputs = n_outputs or _n_outputs(spec, limits)
    return n + width * outputs + outputs  # + the head


def _check_text_caps(spec: StudySpec, limits: Limits) -> None:
    """A text spec's vocabulary and kept length within RNNTUNE_MAX_VOCAB / RNNTUNE_MAX_TEXT_LENGTH."""
    if spec.data.name != "text":
        return
    size = spec.data.params.get("max_size")
    if size is not None and size > limits.max_vocab:
        raise ValueError(
            f"data.params.max_size: {size} is over this server's limit RNNTUNE_MAX_VOCAB={limits.max_vocab}"
        )
    searched = "max_length" in spec.search_space
    length = _upper(spec, "max_length") if searched else spec.data.params.get("max_length")
    if length is not None and length > limits.max_text_length:
        where = "search_space.max_length" if searched else "data.params.max_length"
        raise ValueError(
            f"{where}: {length} tokens is over this server's limit RNNTUNE_MAX_TEXT_LENGTH={limits.max_text_length}"
        )


def _generated_elements(spec: StudySpec, window: int | None) -> tuple[str, int] | None:
    """(field, values) a built-in generator would make, windows included; None for other data."""
    p, name = spec.data.params, spec.data.name
    sizes = {"sine": ("n_series", 500, "length", 60), "adding": ("n_samples", 3000, "length", 50)}
    if name not in sizes:
        return None
    count_key, count_default, length_key, length_default = sizes[name]
    count, length = p.get(count_key, count_default), p.get(length_key, length_default)
    for key, value in ((count_key, count), (length_key, length)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"data.params.{key}: must be an integer, but got {value!r}")
    if name == "adding":
        return f"data.params.{count_key}", count * length * 2
    return f"data.params.{count_key}", count * length * (1 + min(window or length, length))


def check_limits(
    spec: StudySpec,
    limits: Limits,
    *,
    n_features: int | None = None,
    window: int | None = None,
    n_outputs: int | None = None,
) -> None:
    """Raise ValueError ("field: value ... limit RNNTUNE_MAX_...") for the first breach.

    ``n_features`` / ``window``: an uploaded file's own input width and length, where the spec
    alone cannot tell them (``datasets.check_spec`` passes an .npz's)."""
    if spec.budget.n_trials > limits.max_trials_per_study:
        raise ValueError(
            f"budget.n_trials: {spec.budget.n_trials} exceeds this server's limit "
            f"RNNTUNE_MAX_TRIALS_PER_STUDY={limits.max_trials_per_study}"
        )
    if spec.budget.max_epochs > limits.max_epochs_per_trial:
        raise ValueError(
            f"budget.max_epochs: {spec.budget.max_epochs} exceeds this server's limit "
            f"RNNTUNE_MAX_EPOCHS_PER_TRIAL={limits.max_epochs_per_trial}"
        )
    for section in ("sampler", "pruner"):
        for key, value in getattr(spec, section).options.items():
            _check_option(f"{section}.{key}", value, limits.max_search_option)
    if spec.objective is not None:
        return  # the user's own training: no model or data of rnntune's to size
    _check_text_caps(spec, limits)
    n_params = model_params_upper(spec, n_features, n_outputs, limits)
    if n_params > limits.max_model_params:
        sizes = (
            ("embed_dim", "hidden_size", "num_layers") if spec.data.name == "text" else ("hidden_size", "num_layers")
        )
        where = next((f"search_space.{k}" for k in sizes if k in spec.search_space), "model")
        raise ValueError(
            f"{where}: the largest model this spec can build has {n_params} parameters, over this server's "
            f"limit RNNTUNE_MAX_MODEL_PARAMS={limits.max_model_params}"
        )
    window = window or _window_upper(spec, limits)
    if window is not None:
        batch = int(_upper(spec, "batch_size"))
        hidden = int(_upper(spec, "hidden_size")) * (2 if _upper(spec, "bidirectional") else 1)
        width = max(n_features or _n_features(spec), hidden)
        n = batch * int(window) * width
        if n > limits.max_batch_elements:
            where = "search_space.batch_size" if "batch_size" in spec.search_space else "training.batch_size"
            raise ValueError(
                f"{where}: batch {batch} x window {window} x width {width} = {n} values, over this "
                f"server's limit RNNTUNE_MAX_BATCH_ELEMENTS={limits.max_batch_elements}"
            )
    generated = _generated_elements(spec, window)
    if generated is not None and generated[1] > limits.max_data_elements:
        raise ValueError(
            f"{generated[0]}: the generated data holds {generated[1]} values, over this server's limit "
            f"RNNTUNE_MAX_DATA_ELEMENTS={limits.max_data_elements}"
        )


def _check_option(where: str, value: Any, limit: int) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_option(f"{where}.{key}", item, limit)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_option(f"{where}[{i}]", item, limit)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > limit:
        raise ValueError(f"{where}: {value!r} exceeds this server's limit RNNTUNE_MAX_SEARCH_OPTION={limit}")


def resolve_roots(value: str | Sequence[str | os.PathLike]) -> list[str]:
    """``RNNTUNE_DATA_ROOTS`` (':' or ',' separated) as absolute real paths (symlinks followed
    where they exist: a root may be a mount the workers have and the API has not)."""
    parts = re.split(r"[:,]", value) if isinstance(value, str) else list(value)
    roots = []
    for part in (os.fspath(p).strip() for p in parts):
        if not part:
            continue
        if not os.path.isabs(part):
            raise ValueError(f"data roots must be absolute directories, but got {part!r}")
        roots.append(os.path.realpath(part))
    return roots


def resolve_path(path: Any, roots: Sequence[str]) -> str:
    """The real path (symlinks followed) of a file a spec names, if it lies under a data root."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"must be a file path, but got {path!r}")
    if not os.path.isabs(path):
        raise ValueError(f"must be an absolute path, but got {path!r}")
    if not roots:
        raise ValueError(
            "this server allows no file paths (RNNTUNE_DATA_ROOTS is empty): upload the file with POST /v1/datasets"
        )
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise ValueError(f"{path!r} is not under a directory this server allows (RNNTUNE_DATA_ROOTS)")
    return real


def is_path(value: Any) -> bool:
    """An embeddings reference is a path when absolute, else the name or id of an upload."""
    return isinstance(value, str) and os.path.isabs(value)


def named_paths(spec: StudySpec) -> list[tuple[str, Any]]:
    """(field, value) of every file path the spec names."""
    d = spec.data
    if d is None:  # an objective plugin or command: its script is checked by command.spec_errors
        return []
    out = [("data.path", d.path)] if d.path is not None else []
    if d.params.get("path") is not None:
        out.append(("data.params.path", d.params["path"]))
    for key in ("embeddings", "embeddings_vocab"):
        value = d.params.get(key)
        if value is not None and (is_path(value) or not isinstance(value, (str, int))):
            out.append((f"data.params.{key}", value))
    return out


ROOT_TEXT_REASON = (
    "a text study on a server file puts the file's words (its vocabulary) and label names into the "
    "downloadable model file, which this server does not allow (RNNTUNE_ALLOW_ROOT_TEXT is off): upload "
    "the file (POST /v1/datasets) and name it as data.dataset"
)


def root_text_errors(spec: StudySpec, allowed: bool) -> list[tuple[str, str]]:
    """(field, reason) when a text study trains on a path-named (server) file without the
    operator's consent (``RNNTUNE_ALLOW_ROOT_TEXT``): its model file would carry the file's
    vocabulary and label names to whoever downloads it. Uploads are their user's own."""
    d = spec.data
    if allowed or d is None or d.name != "text" or d.dataset is not None:
        return []
    return [(field, ROOT_TEXT_REASON) for field, _ in named_paths(spec) if field in ("data.path", "data.params.path")]


def check_paths(spec: StudySpec, roots: Sequence[str]) -> list[tuple[str, str]]:
    """(field, reason) for each path outside the data roots. Whether the file exists is the
    workers' to say (the API may not see their mounts); they check the roots again first."""
    errors = []
    for field, value in named_paths(spec):
        try:
            resolve_path(value, roots)
        except ValueError as exc:
            errors.append((field, str(exc)))
    return errors
