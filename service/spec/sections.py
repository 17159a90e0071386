"""The spec's sections: ``data``, ``objective``, ``sampler``, ``pruner``, ``budget``, ``selection``."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from rnntune.models.config import (
    DATASETS,
    FILE_DATASETS,
)
from rnntune.service import plugins
from rnntune.service.spec.hyperparameters import (
    DATA_PARAMS,
    INT32_MAX,
    PLUGIN_DATASET,
    PRUNERS,
    SAMPLERS,
    _check_data_param,
)
from rnntune.service.spec.values import NAME_RE

log = logging.getLogger("rnntune.spec")


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
        known = DATA_PARAMS.get(self.name)
        if known is not None:  # None: a plugin's params are its own
            for key in self.params:
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
    if (d.name == "plugin") != (d.plugin is not None):
        raise ValueError("plugin: give data.plugin (an installed data-set plugin) exactly when data.name is 'plugin'")
    if d.plugin is not None:
        try:
            plugins.check_name(d.plugin)
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
        if (self.plugin is None) == (self.command is None):
            raise ValueError("give exactly one of objective.plugin and objective.command")
        if self.plugin is not None:
            plugins.check_name(self.plugin)
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


class WarmStartSpec(BaseModel):
    """Start from earlier studies (``service/studies/warm_start.py``): each one's ``top_k`` best complete
    trials that fit this search space run first (counted in ``n_trials``); where the spaces and
    objectives match, their trials are the sampler's history too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_by_name=True, serialize_by_alias=True)
    from_: list[str] = Field(alias="from", min_length=1, description="the studies to start from, by name")
    top_k: int = Field(default=5, ge=1, le=INT32_MAX, description="best complete trials taken from each")

    @field_validator("from_")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for i, name in enumerate(names):
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise ValueError(f"from[{i}]: a study name ({NAME_RE.pattern}), but got {name!r}")
            if name in names[:i]:
                raise ValueError(f"from[{i}]: {name!r} is named twice")
        return names
