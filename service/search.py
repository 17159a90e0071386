"""From a spec to Optuna: the sampler, the pruner, and one trial's suggestions."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any

import optuna

from rnntune.service.space import CategoricalParam, FloatParam, IntParam, grid_axes

if TYPE_CHECKING:
    from rnntune.service.spec import StudySpec


def build_sampler(spec: StudySpec, *, seed_offset: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler. A worker builds one per study, with ``seed_offset`` the sequence
    number of its first ticket there, so that seeded samplers on different workers never share
    a seed (and propose the same points)."""
    s = spec.sampler
    seed = None if s.seed is None else (s.seed + seed_offset) % 2**32  # numpy's seed range
    opts = s.options
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **opts)
        if s.name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **opts)
        if s.name == "grid":
            return optuna.samplers.GridSampler(grid_axes(spec.search_space), seed=seed, **opts)
        if s.name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, **opts)
        if s.name == "gp":
            return optuna.samplers.GPSampler(seed=seed, **opts)
        if s.name == "qmc":
            # QMC indexes its sequence by trial number: every worker must share one seed.
            return optuna.samplers.QMCSampler(seed=s.seed, **opts)
        if s.name == "genetic":
            # NSGA-II (a genetic algorithm; single-objective here): population_size, mutation_prob,
            # crossover_prob, swapping_prob pass through. Its generations live in the storage.
            return optuna.samplers.NSGAIISampler(seed=seed, **opts)
    raise ValueError(f"unknown sampler {s.name!r}")


SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "genetic": optuna.samplers.NSGAIISampler,
}
PRUNER_CLASSES = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
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


def check_options(spec: StudySpec) -> list[str]:
    """Every sampler and pruner option of the spec that its Optuna class cannot take."""
    return option_errors("sampler", SAMPLER_CLASSES[spec.sampler.name], spec.sampler.options) + option_errors(
        "pruner", PRUNER_CLASSES[spec.pruner.name], spec.pruner.options
    )


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    opts = p.options
    if p.name == "median":
        return optuna.pruners.MedianPruner(**opts)
    if p.name == "percentile":
        if "percentile" not in opts:
            raise ValueError("percentile pruner needs 'percentile' (0-100)")
        return optuna.pruners.PercentilePruner(**opts)
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if p.name == "hyperband":
        opts.setdefault("max_resource", spec.budget.max_epochs)
        return optuna.pruners.HyperbandPruner(**opts)
    if p.name == "none":
        if opts:
            raise ValueError(f"pruner 'none' takes no options, but got {sorted(opts)}")
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {p.name!r}")


class _PinnedSampler(optuna.samplers.PartialFixedSampler):
    """``base`` with ``params`` fixed. Like a trial queued with ``enqueue_trial``, a pinned trial
    takes no grid point of its own: the grid sampler's ``before_trial`` is skipped."""

    def __init__(self, params: dict[str, Any], base: optuna.samplers.BaseSampler):
        super().__init__(params, base)
        self._grid = isinstance(base, optuna.samplers.GridSampler)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self._grid:
            super().before_trial(study, trial)


def pinned_sampler(base: optuna.samplers.BaseSampler, params: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """The sampler for a ticket that carries its parameters (an initial trial, a retry): those
    values as given, anything else from ``base``, which still learns from the trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _PinnedSampler(params, base)


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Every hyperparameter for one trial: suggested where searched (and its ``when`` holds),
    else the spec's fixed value or the default."""
    values = spec.fixed_params()
    for name, param in spec.search_space.items():
        if any(values.get(k) not in allowed for k, allowed in param.when_values().items()):
            continue
        if isinstance(param, FloatParam):
            values[name] = trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, IntParam):
            values[name] = trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
        elif isinstance(param, CategoricalParam):
            values[name] = trial.suggest_categorical(name, param.choices)
    return values


def hyperparameters(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of a finished trial, from its (suggested) ``params``: what
    :func:`suggest` returned when it ran. A conditional parameter that was not suggested keeps
    the spec's fixed value or the default, exactly as in ``suggest``."""
    values = spec.fixed_params()
    unknown = sorted(set(params) - set(spec.search_space))
    if unknown:
        raise ValueError(f"params {unknown} are not in the spec's search_space")
    values.update(params)
    return values
