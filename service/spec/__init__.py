"""The study spec: one pydantic schema for the API, the CLI and ``studies/*.yaml``.

A spec names the data, fixes some hyperparameters (``model``, ``training``), searches others
(``search_space``), and says how to search (``sampler``, ``pruner``) and how long (``budget``).
The package validates all of it up front, so a bad spec is a 422 / exit 2 naming the field, never a
failed trial. It imports no torch (the API must start fast): the allowed cells, optimisers,
schedulers and data sets are the models' own, from the torch-free ``rnntune.models.config``.

``hyperparameters`` (what can be tuned) -> ``sections`` -> ``rules`` (the cross-field rules) ->
``study`` (``StudySpec``, which runs them) -> ``resources`` (the server's limits) and ``paths`` (its
data roots) -> ``load`` (parsing, errors, stored specs). Import from here; the modules import each
other directly.
"""

from rnntune.models.config import (  # the allowed values are part of the spec's API
    CELLS,
    CLASSIFICATION_DATASETS,
    DATASETS,
    FILE_DATASETS,
    FOLD_DATASETS,
    KFOLD_DATASETS,
    OPTIMIZERS,
    SCHEDULERS,
)
from rnntune.service.space import (  # so are the parameter kinds
    MAX_GRID_POINTS,
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    Scalar,
)
from rnntune.service.spec.hyperparameters import (
    BUILTIN_FEATURES,
    DATA_PARAM_KINDS,
    DATA_PARAMS,
    HYPERPARAMETERS,
    INT32_MAX,
    METRICS,
    NULLABLE_PARAMS,
    OBJECTIVES,
    PLUGIN_DATASET,
    PRUNERS,
    SAMPLERS,
    SEED_MAX,
    TEXT_ONLY,
    TEXT_PARAMS,
    _Hp,
)
from rnntune.service.spec.limits import (
    Limits,
)
from rnntune.service.spec.load import (
    BrokenSpec,
    SpecError,
    broken_reason,
    format_errors,
    load_spec,
    load_stored,
    load_yaml,
    parse_spec,
    stored_spec,
    stored_spec_problem,
    try_stored_spec,
)
from rnntune.service.spec.paths import (
    ROOT_TEXT_REASON,
    check_paths,
    is_path,
    named_paths,
    resolve_path,
    resolve_roots,
    root_text_errors,
)
from rnntune.service.spec.resources import (
    check_limits,
    model_params_upper,
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
from rnntune.service.spec.study import (
    StudySpec,
    grid_size,
)
from rnntune.service.spec.values import (
    CUSTOM_METRIC_RE,
    CUSTOM_PARAM_RE,
    NAME_RE,
)

__all__ = [
    "BUILTIN_FEATURES",
    "BrokenSpec",
    "BudgetSpec",
    "CELLS",
    "CLASSIFICATION_DATASETS",
    "CUSTOM_METRIC_RE",
    "CUSTOM_PARAM_RE",
    "CategoricalParam",
    "DATASETS",
    "DATA_PARAMS",
    "DATA_PARAM_KINDS",
    "DataSpec",
    "FILE_DATASETS",
    "FOLD_DATASETS",
    "FloatParam",
    "HYPERPARAMETERS",
    "INT32_MAX",
    "IntParam",
    "KFOLD_DATASETS",
    "Limits",
    "MAX_GRID_POINTS",
    "METRICS",
    "NAME_RE",
    "NULLABLE_PARAMS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "ObjectiveSpec",
    "PLUGIN_DATASET",
    "PRUNERS",
    "Param",
    "PrunerSpec",
    "ROOT_TEXT_REASON",
    "SAMPLERS",
    "SCHEDULERS",
    "SEED_MAX",
    "SamplerSpec",
    "Scalar",
    "SelectionSpec",
    "WarmStartSpec",
    "SpecError",
    "StudySpec",
    "TEXT_ONLY",
    "TEXT_PARAMS",
    "_Hp",
    "broken_reason",
    "check_limits",
    "check_paths",
    "format_errors",
    "grid_size",
    "is_path",
    "load_spec",
    "load_stored",
    "load_yaml",
    "model_params_upper",
    "named_paths",
    "parse_spec",
    "resolve_path",
    "resolve_roots",
    "root_text_errors",
    "stored_spec",
    "stored_spec_problem",
    "try_stored_spec",
]
