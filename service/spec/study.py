"""``StudySpec``: the whole spec, its per-field rules, the order of its cross-field rules (``rules``),
and what the API and the worker read of it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rnntune.service import space
from rnntune.service.finite import check_numbers
from rnntune.service.space import Param
from rnntune.service.spec.hyperparameters import (
    HYPERPARAMETERS,
    INT32_MAX,
    METRICS,
    OBJECTIVES,
    SEED_MAX,
    Direction,
    _check_value,
)
from rnntune.service.spec.rules import (
    check_builtin,
    check_objective,
    check_options,
    check_selection,
    check_trials,
    check_warm_start,
)
from rnntune.service.spec.sections import (
    BudgetSpec,
    DataSpec,
    ObjectiveSpec,
    PrunerSpec,
    SamplerSpec,
    SelectionSpec,
    WarmStartSpec,
)
from rnntune.service.spec.values import (
    CUSTOM_METRIC_RE,
    NAME_RE,
    _check_param_domain,
    _custom_names,
    _fixed_schema,
    _plugin_model,
)

log = logging.getLogger("rnntune.spec")


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
    direction: Direction | None = Field(default=None, description="default: the metric's")
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
    warm_start: WarmStartSpec | None = Field(
        default=None, description="run the best trials of earlier studies first, and learn from their history"
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
        """The cross-field rules (``rules``), in order; then the server's own ``checks``
        (``load.parse_spec``) and the sampler and pruner built once."""
        limits = (info.context or {}).get("limits")
        checks: Sequence[Callable[[StudySpec], None]] = (info.context or {}).get("checks", ())
        data = self._source()
        self._metric_and_direction()
        check_selection(self.selection, data, self.multi_objective, limits)
        if data is not None:
            where = "objectives" if self.objectives else "metric"
            check_builtin(data, self.model, self.training, self.search_space, self.objective_names(), where)
        check_trials(self.initial_trials, self.search_space, self.sampler.name, self.budget, limits)
        check_warm_start(self.warm_start, self.name, self.sampler.name, limits)
        for check in checks:  # before anything is built from the spec
            check(self)
        check_options(self.sampler, self.pruner, self.search_space, self.budget.max_epochs)
        return self

    def _source(self) -> DataSpec | None:
        """The data rnntune trains on; None for an objective plugin or command, which has none."""
        if self.objective is not None:
            if self.objectives is not None:
                raise ValueError(
                    "objectives: several objectives need rnntune's own training (n_params, latency_ms); "
                    "an objective plugin or command returns one value"
                )
            check_objective(self.objective, self.model, self.training, self.data, self.search_space)
            return None
        if self.data is None:
            raise ValueError("data: required (only a study with an objective plugin or command has no data)")
        return self.data

    def _metric_and_direction(self) -> None:
        """The study's metric (several objectives: the first) and its direction (unset: the metric's)."""
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

    # --- helpers used by the API and the worker -----------------------------------------
    def objective_names(self) -> list[str]:
        """What each trial returns, in order: ``objectives``, or the one ``metric``."""
        return list(self.objectives) if self.objectives else [self.metric]

    def directions(self) -> list[Direction]:
        """The Optuna study's direction per objective."""
        if not self.objectives:  # one objective: a built-in metric's, or a plugin's / command's own
            assert self.direction is not None  # validation sets it
            return [self.direction]
        return [OBJECTIVES[name] for name in self.objective_names()]

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_names()) > 1

    def fixed_params(self) -> dict[str, Any]:
        """Every hyperparameter's value when not searched: the spec's fixed value or the default.
        An objective plugin or command gets only the searched ones (``search.suggest``)."""
        data = self.data
        if self.objective is not None or data is None:  # the one spec without data
            return {}
        values = {name: hp.default for name, hp in HYPERPARAMETERS.items()}
        values.update({k: v for k, v in self.model.items() if k != "plugin"})
        values.update(self.training)
        if data.window is not None:
            values["window"] = data.window
        if data.name == "text":
            values["max_length"] = data.params.get("max_length")
        return values

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        if data.get("objectives") is None:  # a single-objective spec hashes as it did before `objectives`
            data.pop("objectives", None)
        if self.selection.is_default:  # and one that keeps the single best as it did before `selection`
            data.pop("selection", None)
        if data.get("warm_start") is None:  # and one without a warm start as it did before `warm_start`
            data.pop("warm_start", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def grid_size(spec: StudySpec) -> int:
    """Points of the spec's grid search, counted without building it (:func:`space.grid_size`)."""
    return space.grid_size(spec.search_space)
