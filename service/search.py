"""From a spec to Optuna: the sampler, the pruner, and one trial's suggestions."""

from __future__ import annotations

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
    seed = None if s.seed is None else s.seed + seed_offset
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
