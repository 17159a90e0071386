"""From a spec to Optuna: the sampler, the pruner, and one trial's suggestions."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import optuna

from rnntune.service import samplers
from rnntune.service.space import CategoricalParam, FloatParam, IntParam, grid_axes

if TYPE_CHECKING:
    from rnntune.service.spec import StudySpec


def build_sampler(spec: StudySpec, *, seed_offset: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler. A worker builds one per study, with ``seed_offset`` the sequence
    number of its first ticket there, so that seeded samplers on different workers never share
    a seed (and propose the same points)."""
    s = spec.sampler
    seed = None if s.seed is None else (s.seed + seed_offset) % 2**32  # numpy's seed range
    grid = grid_axes(spec.search_space) if s.name == "grid" else None
    return samplers.make_sampler(s.name, s.options, seed=seed, study_seed=s.seed, grid=grid)


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    return samplers.make_pruner(spec.pruner.name, spec.pruner.options, max_epochs=spec.budget.max_epochs)


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
