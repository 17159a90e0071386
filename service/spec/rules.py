"""The spec's cross-field rules: what no one section can check alone (an objective plugin or command
against the built-in training, the metric against the data, the selection, text and highway
options, initial trials against the space and the budget, a warm start, the sampler's and pruner's
options). ``StudySpec``'s model validator (``study``) calls them in order, each with the parts of
the spec it reads, so this module never imports ``study``. Each raises ValueError naming the field.
"""

from __future__ import annotations

from typing import Any

from rnntune.models.config import (
    CLASSIFICATION_DATASETS,
    FOLD_DATASETS,
    KFOLD_DATASETS,
)
from rnntune.service import samplers, space
from rnntune.service.space import (
    MAX_GRID_POINTS,
    CategoricalParam,
    Param,
)
from rnntune.service.spec.hyperparameters import (
    HYPERPARAMETERS,
    PLUGIN_DATASET,
    TEXT_ONLY,
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
    CUSTOM_PARAM_RE,
    _check_choice,
)


def check_objective(
    objective: ObjectiveSpec,
    model: dict[str, Any],
    training: dict[str, Any],
    data: DataSpec | None,
    search_space: dict[str, Param],
) -> None:
    """An objective plugin or command: no built-in model, training or data."""
    for field, values in (("model", model), ("training", training)):
        if values:
            raise ValueError(f"{field}: an objective plugin or command trains itself; put its values in search_space")
    if data is not None:
        raise ValueError("data: an objective plugin or command loads its own data")
    for name in search_space:
        if not CUSTOM_PARAM_RE.fullmatch(name):
            raise ValueError(f"search_space.{name}: a parameter name is a plain identifier")
    if objective.command is not None:
        from rnntune.service.trials.command import check_command

        try:
            check_command(objective.command, search_space)
        except ValueError as exc:
            raise ValueError(f"objective.{exc}") from None


def check_selection(sel: SelectionSpec, data: DataSpec | None, multi_objective: bool, limits: Limits | None) -> None:
    """A re-evaluated winner needs rnntune's own training (``data``; None: an objective plugin or
    command), one objective, a data set rnntune splits for folds, and runs within the limit."""
    if sel.is_default:
        return
    if data is None:
        raise ValueError(
            "selection: re-evaluation retrains with rnntune's own training; an objective plugin or command "
            "has no seed or folds of ours to vary (leave selection out)"
        )
    if multi_objective:
        raise ValueError(
            "selection: a study with several objectives keeps its Pareto front (GET .../pareto), not one winner "
            "by a mean (leave selection out)"
        )
    if sel.folds > 1 and data.name not in FOLD_DATASETS + KFOLD_DATASETS:
        raise ValueError(
            f"selection.folds: folds need a data set rnntune splits ({', '.join(FOLD_DATASETS + KFOLD_DATASETS)}), "
            f"but got data.name={data.name!r}; use folds: 1"
        )
    if limits is not None and sel.n_runs > limits.max_selection_runs:
        raise ValueError(
            f"selection: top_k x seeds x folds = {sel.top_k} x {sel.seeds} x {sel.folds} = {sel.n_runs} runs, "
            f"over this server's limit RNNTUNE_MAX_SELECTION_RUNS={limits.max_selection_runs}"
        )


def check_builtin(
    data: DataSpec,
    model: dict[str, Any],
    training: dict[str, Any],
    search_space: dict[str, Param],
    names: list[str],
    where: str,
) -> None:
    """Checks that apply to rnntune's own training (a built-in or plugin model): the metrics
    ``names`` (what each trial returns; ``where``: the field that gave them) fit the data, the
    text and highway options, and no hyperparameter both searched and fixed."""
    classifies = data.name in CLASSIFICATION_DATASETS or data.name == PLUGIN_DATASET
    for name in names:
        if name in ("val_accuracy", "val_f1") and not classifies:
            raise ValueError(f"{where}: {name} needs a classification data set, but got data.name={data.name!r}")
        if data.name in ("digits", "text") and name == "val_mae":
            raise ValueError(f"{where}: val_mae needs a regression data set, but data.name={data.name!r}")
    check_text(data, model, search_space)
    check_highway(data, model, search_space)
    for name in search_space:
        if name not in HYPERPARAMETERS:
            continue  # a model plugin's own parameter
        group = HYPERPARAMETERS[name].group
        fixed = model if group == "model" else training if group == "training" else {}
        if name in fixed:
            raise ValueError(f"search_space.{name}: also fixed in {group}.{name}; keep one")
        if name == "window" and data.window is not None:
            raise ValueError("search_space.window: also fixed in data.window; keep one")
        if name == "max_length" and data.params.get("max_length") is not None:
            raise ValueError("search_space.max_length: also fixed in data.params.max_length; keep one")


def check_text(data: DataSpec, model: dict[str, Any], search_space: dict[str, Param]) -> None:
    """Text-only hyperparameters need text data; window does not apply to text."""
    searched = set(search_space)
    if data.name != "text":
        for name in TEXT_ONLY:
            if name in searched or name in model:
                where = f"search_space.{name}" if name in searched else "model"
                raise ValueError(f"{where}: {name} applies to data.name 'text' only, but got {data.name!r}")
        return
    if "window" in searched or data.window is not None:
        where = "search_space.window" if "window" in searched else "data.window"
        raise ValueError(f"{where}: window does not apply to text; truncate with max_length")
    params = data.params
    has_matrix = params.get("embeddings") is not None
    if has_matrix and "embed_dim" in searched:
        raise ValueError(
            "search_space.embed_dim: with data.params.embeddings the width is the matrix's; do not search it"
        )
    freeze = model.get("freeze_embeddings") or "freeze_embeddings" in searched
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


def check_highway(data: DataSpec, model: dict[str, Any], search_space: dict[str, Param]) -> None:
    """``highway`` / ``highway_window`` read a forecaster's target column: forecasting data only."""
    if data.name in FOLD_DATASETS or data.name == PLUGIN_DATASET:
        return
    searched = search_space.get("highway")
    can_be_on = isinstance(searched, CategoricalParam) and True in searched.choices
    for name, used in (
        ("highway", model.get("highway") is True or can_be_on),
        ("highway_window", "highway_window" in model or "highway_window" in search_space),
    ):
        if used:
            where = f"search_space.{name}" if name in search_space else f"model.{name}"
            raise ValueError(
                f"{where}: the highway applies to forecasting data ({', '.join(FOLD_DATASETS)}), "
                f"but got data.name={data.name!r}"
            )


def check_trials(
    initial_trials: list[dict[str, Any]],
    search_space: dict[str, Param],
    sampler: str,
    budget: BudgetSpec,
    limits: Limits | None,
) -> None:
    """``initial_trials`` are points of the space, within the budget; a grid search's points are
    counted (never built) and are its budget's default. Sets ``budget.n_trials`` for a grid."""
    if limits is not None and len(initial_trials) > limits.max_initial_trials:
        raise ValueError(
            f"initial_trials: {len(initial_trials)} entries, over this server's limit "
            f"RNNTUNE_MAX_INITIAL_TRIALS={limits.max_initial_trials}"
        )
    for i, params in enumerate(initial_trials):
        for key, value in params.items():
            if key not in search_space:
                raise ValueError(f"initial_trials[{i}].{key}: not in search_space")
            _check_choice(f"initial_trials[{i}].{key}", search_space[key], value)
    if sampler == "grid":
        size = space.grid_size(search_space)  # raises on continuous ranges; counts, never builds
        if limits is not None and size > limits.max_grid_size:
            raise ValueError(
                f"search_space: the grid has {size} points, over this server's limit "
                f"RNNTUNE_MAX_GRID_SIZE={limits.max_grid_size}"
            )
        if size > MAX_GRID_POINTS:
            raise ValueError(f"search_space: the grid has {size} points, more than {MAX_GRID_POINTS}")
        if budget.n_trials is None:
            budget.n_trials = size
        elif budget.n_trials > size:
            raise ValueError(f"budget.n_trials: {budget.n_trials} exceeds the grid's {size} points")
    elif budget.n_trials is None:
        raise ValueError("budget.n_trials: required (only grid search has a natural size)")
    if len(initial_trials) > budget.n_trials:
        raise ValueError(f"initial_trials: {len(initial_trials)} given but budget.n_trials is {budget.n_trials}")


def check_warm_start(warm: WarmStartSpec | None, name: str, sampler: str, limits: Limits | None) -> None:
    """What can be checked of ``warm_start`` without the database (service/studies/warm_start.py
    checks the studies it names at submission); ``name``: the study's own."""
    if warm is None:
        return
    if sampler == "grid":
        raise ValueError("warm_start: a grid search runs each point of its grid once; leave warm_start out")
    if name in warm.from_:
        raise ValueError(f"warm_start.from[{warm.from_.index(name)}]: a study cannot start from itself")
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


def check_options(sampler: SamplerSpec, pruner: PrunerSpec, search_space: dict[str, Param], max_epochs: int) -> None:
    """Build the sampler and pruner once so that a bad option is caught here, not in a worker."""
    s, p = sampler, pruner
    problems = samplers.check_options(s.name, s.options, p.name, p.options)  # what the constructors leave unchecked
    if problems:
        raise ValueError(problems[0])
    grid = space.grid_axes(search_space) if s.name == "grid" else None
    try:
        samplers.make_sampler(s.name, s.options, seed=s.seed, study_seed=s.seed, grid=grid)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sampler: {exc}") from None
    try:
        samplers.make_pruner(p.name, p.options, max_epochs=max_epochs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pruner: {exc}") from None
