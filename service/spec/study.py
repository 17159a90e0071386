"""``StudySpec``: the whole spec, its cross-field rules, and what the API and the worker read of it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rnntune.models.config import (
    CLASSIFICATION_DATASETS,
    FOLD_DATASETS,
    KFOLD_DATASETS,
)
from rnntune.service import samplers, space
from rnntune.service.finite import check_numbers
from rnntune.service.space import (
    MAX_GRID_POINTS,
    CategoricalParam,
    Param,
)
from rnntune.service.spec.hyperparameters import (
    HYPERPARAMETERS,
    INT32_MAX,
    METRICS,
    OBJECTIVES,
    PLUGIN_DATASET,
    SEED_MAX,
    TEXT_ONLY,
    _check_value,
)
from rnntune.service.spec.limits import Limits
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
    CUSTOM_PARAM_RE,
    NAME_RE,
    _check_choice,
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
        limits = (info.context or {}).get("limits")
        checks = (info.context or {}).get("checks", ())  # the server's own (load.parse_spec)
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
            return self._rest(limits, checks)
        self._builtin()
        return self._rest(limits, checks)

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
        _check_highway(self)
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

    def _rest(self, limits: Limits | None, checks: Sequence[Callable[[StudySpec], None]]) -> StudySpec:
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
        self._warm_start(limits)
        for check in checks:  # before anything is built from the spec
            check(self)
        _check_options(self)
        return self

    def _warm_start(self, limits: Limits | None) -> None:
        """What can be checked of ``warm_start`` without the database (service/warm_start.py
        checks the studies it names at submission)."""
        warm = self.warm_start
        if warm is None:
            return
        if self.sampler.name == "grid":
            raise ValueError("warm_start: a grid search runs each point of its grid once; leave warm_start out")
        if self.name in warm.from_:
            raise ValueError(f"warm_start.from[{warm.from_.index(self.name)}]: a study cannot start from itself")
        if limits is not None and len(warm.from_) > limits.max_warm_start_studies:
            raise ValueError(
                f"warm_start.from: {len(warm.from_)} studies, over this server's limit "
                f"RNNTUNE_MAX_WARM_START_STUDIES={limits.max_warm_start_studies}"
            )
        if limits is not None and warm.top_k > limits.max_warm_start_trials:
            raise ValueError(
                f"warm_start.top_k: {warm.top_k}, over this server's limit "
                f"RNNTUNE_MAX_WARM_START_TRIALS={limits.max_warm_start_trials}"
            )

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
        if data.get("warm_start") is None:  # and one without a warm start as it did before `warm_start`
            data.pop("warm_start", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


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


def _check_highway(spec: StudySpec) -> None:
    """``highway`` / ``highway_window`` read a forecaster's target column: forecasting data only."""
    if spec.data.name in FOLD_DATASETS or spec.data.name == PLUGIN_DATASET:
        return
    searched = spec.search_space.get("highway")
    can_be_on = isinstance(searched, CategoricalParam) and True in searched.choices
    for name, used in (
        ("highway", spec.model.get("highway") is True or can_be_on),
        ("highway_window", "highway_window" in spec.model or "highway_window" in spec.search_space),
    ):
        if used:
            where = f"search_space.{name}" if name in spec.search_space else f"model.{name}"
            raise ValueError(
                f"{where}: the highway applies to forecasting data ({', '.join(FOLD_DATASETS)}), "
                f"but got data.name={spec.data.name!r}"
            )


def grid_size(spec: StudySpec) -> int:
    """Points of the spec's grid search, counted without building it (:func:`space.grid_size`)."""
    return space.grid_size(spec.search_space)


def _check_options(spec: StudySpec) -> None:
    """Build the sampler and pruner once so that a bad option is caught here, not in a worker."""
    s, p = spec.sampler, spec.pruner
    problems = samplers.check_options(s.name, s.options, p.name, p.options)  # what the constructors leave unchecked
    if problems:
        raise ValueError(problems[0])
    grid = space.grid_axes(spec.search_space) if s.name == "grid" else None
    try:
        samplers.make_sampler(s.name, s.options, seed=s.seed, study_seed=s.seed, grid=grid)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sampler: {exc}") from None
    try:
        samplers.make_pruner(p.name, p.options, max_epochs=spec.budget.max_epochs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pruner: {exc}") from None
