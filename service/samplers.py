"""Optuna's samplers and pruners by the names a spec gives, and the checks of their options.

Takes plain values (a name, its options, a seed), never a spec: the spec's validation
(``service/spec/``) and the worker's search (``service/search.py``) both build through here.
optuna is imported when a sampler or pruner is built, so importing the spec stays fast."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


def sampler_class(name: str) -> type:
    import optuna

    if name not in SAMPLER_CLASSES:
        raise ValueError(f"unknown sampler {name!r}")
    return getattr(optuna.samplers, SAMPLER_CLASSES[name])


def pruner_class(name: str) -> type:
    import optuna

    if name not in PRUNER_CLASSES:
        raise ValueError(f"unknown pruner {name!r}")
    return getattr(optuna.pruners, PRUNER_CLASSES[name])


def make_sampler(
    name: str,
    options: dict[str, Any],
    *,
    seed: int | None,
    study_seed: int | None = None,
    grid: dict[str, list[Any]] | None = None,
) -> optuna.samplers.BaseSampler:
    """Sampler ``name`` with ``options``. ``seed``: this worker's (distinct per worker, so that
    seeded samplers never propose the same points); ``study_seed``: the spec's own, which QMC
    needs on every worker (it indexes its sequence by trial number); ``grid``: the grid's axes."""
    import optuna

    cls = sampler_class(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "grid":
            return cls(grid or {}, seed=seed, **options)
        return cls(seed=study_seed if name == "qmc" else seed, **options)


def make_pruner(name: str, options: dict[str, Any], *, max_epochs: int) -> optuna.pruners.BasePruner:
    """Pruner ``name`` with ``options``; hyperband's ``max_resource`` defaults to ``max_epochs``."""
    options = dict(options)
    if name == "percentile" and "percentile" not in options:
        raise ValueError("percentile pruner needs 'percentile' (0-100)")
    if name == "hyperband":
        options.setdefault("max_resource", max_epochs)
    if name == "none" and options:
        raise ValueError(f"pruner 'none' takes no options, but got {sorted(options)}")
    return pruner_class(name)(**options)


# The Optuna class of each spec name (``sampler.name`` / ``pruner.name``), by attribute name.
SAMPLER_CLASSES = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "genetic": "NSGAIISampler",  # NSGA-II (a genetic algorithm; single-objective here)
}
PRUNER_CLASSES = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "none": "NopPruner",
}
# Domains Optuna's constructors do not check (they fail later, in a worker, or never): (low, high),
# inclusive; an exclusive low is written as (0, None, "gt").
OPTION_BOUNDS: dict[str, tuple] = {
    "n_startup_trials": (0, None),
    "n_warmup_steps": (0, None),
    "interval_steps": (1, None),
    "n_min_trials": (1, None),
    "n_ei_candidates": (1, None),
    "prior_weight": (0, None, "gt"),
    "percentile": (0, 100),
    "min_resource": (1, None),
    "max_resource": (1, None),
    "reduction_factor": (2, None),
    "min_early_stopping_rate": (0, None),
    "bootstrap_count": (0, None),
    "population_size": (2, None),
    "mutation_prob": (0, 1),
    "crossover_prob": (0, 1),
    "swapping_prob": (0, 1),
    "sigma0": (0, None, "gt"),
    "popsize": (1, None),
    "inc_popsize": (1, None),
}
_KINDS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "None": (lambda v: v is None, "null"),
}


def _annotation_kinds(annotation: Any) -> list[str]:
    """The top-level alternatives of a constructor argument's annotation ("int | None" ->
    ["int", "None"]); a dict[...] is kept as "dict", anything else (a callable, a sampler object)
    is what a spec cannot give."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return ["dict" if p.startswith("dict[") else p for p in parts]


def option_errors(section: str, cls: type, options: dict[str, Any]) -> list[str]:
    """Why each option cannot go to ``cls`` (a sampler or pruner class): its type from the
    constructor's annotation, and :data:`OPTION_BOUNDS`. Unknown names are the constructor's to say."""
    errors = []
    params = inspect.signature(cls).parameters
    for name, value in options.items():
        if name not in params:
            continue
        kinds = _annotation_kinds(params[name].annotation)
        settable = [k for k in kinds if k in _KINDS or k == "dict"]
        if settable == ["None"] and value is not None or not settable:
            errors.append(f"{section}.{name}: takes a Python object ({kinds[0]}), which a spec cannot give")
            continue
        if not any(_KINDS[k][0](value) if k in _KINDS else isinstance(value, dict) for k in settable):
            wanted = " or ".join(_KINDS[k][1] if k in _KINDS else "a mapping" for k in settable)
            errors.append(f"{section}.{name}: must be {wanted}, but got {value!r}")
            continue
        bounds = OPTION_BOUNDS.get(name)
        if bounds is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high, *exclusive = bounds
            too_low = value <= low if exclusive else value < low
            if too_low or (high is not None and value > high):
                shown = f"> {low}" if exclusive else f">= {low}" if high is None else f"in [{low}, {high}]"
                errors.append(f"{section}.{name}: must be {shown}, but got {value!r}")
    return errors


def check_options(sampler: str, sampler_options: dict, pruner: str, pruner_options: dict) -> list[str]:
    """Every sampler and pruner option that its Optuna class cannot take."""
    return option_errors("sampler", sampler_class(sampler), sampler_options) + option_errors(
        "pruner", pruner_class(pruner), pruner_options
    )
