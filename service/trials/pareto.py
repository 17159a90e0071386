"""Several objectives: pruning on the first objective, and the Pareto front.

A spec's ``objectives: [val_loss, n_params]`` makes an Optuna multi-objective study (one direction
per objective). Optuna cannot prune those: ``Trial.report`` and ``Trial.should_prune`` raise
``NotImplementedError`` for multi-objective studies, and its samplers assume single-objective
studies whenever a trial has intermediate values (TPE scores a pruned trial's last intermediate
value with ``study.direction``, which a multi-objective study refuses).

So rnntune prunes on the **first objective** (a val metric, reported every epoch) with the spec's
own pruner, unchanged:

- each epoch's value of the first objective goes to the trial's system attribute
  ``TrialSystemAttr.FIRST_OBJECTIVE_CURVE`` (``{"1": value, "2": value, ...}``), not to Optuna's
  intermediate values, which would break the samplers as above;
- :func:`should_prune` asks the spec's pruner (median, percentile, successive halving, hyperband:
  Optuna's own classes) about the trial through :class:`FirstObjectiveStorage`, a view of the
  study's storage as a single-objective study: the first direction only, and each trial's
  first-objective curve as its intermediate values. The pruner applies its own rule to those
  values (the median pruner: this trial's best value so far against the median, at the same
  epoch, of the completed trials' first-objective values), exactly as it would in a
  single-objective study of the first objective. What a pruner writes (successive halving's rung
  values) goes to the real storage.

A pruned trial keeps no objective values (it never measured the others), so it is never on the
front. The front itself (:func:`front_mask`) is Optuna's non-dominated sort over the COMPLETE
trials' values, each objective turned to "minimise".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from rnntune.service.store import optuna_compat
from rnntune.service.store.attrs import TrialSystemAttr
from rnntune.service.store.optuna_compat import FrozenStudy


class _DelegatingStorage(BaseStorage):
    """Every abstract method of ``BaseStorage`` handed to the real storage, one by one (as Optuna's
    own ``_CachedStorage`` wraps its backend)."""

    def __init__(self, storage: BaseStorage):
        self._storage = storage

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._storage.create_new_study(directions, study_name)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._storage.create_new_trial(study_id, template_trial)

    def delete_study(self, study_id: int) -> None:
        self._storage.delete_study(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._storage.get_all_studies()

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._storage.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._storage.get_study_name_from_id(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._storage.get_study_system_attrs(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._storage.get_study_user_attrs(study_id)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._storage.set_study_system_attr(study_id, key, value)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._storage.set_study_user_attr(study_id, key, value)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._storage.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self._storage.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._storage.set_trial_state_values(trial_id, state, values)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_user_attr(trial_id, key, value)


class FirstObjectiveStorage(_DelegatingStorage):
    """A multi-objective study's storage, seen as the single-objective study of its first objective.

    Reads are the real storage's, with the first direction only and each trial's per-epoch
    first-objective values (``TrialSystemAttr.FIRST_OBJECTIVE_CURVE``) as its intermediate values;
    writes go to the real storage."""

    def __init__(self, storage: BaseStorage, direction: StudyDirection):
        super().__init__(storage)
        self._direction = direction

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [self._direction]

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        return first_objective_trial(self._storage.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list[optuna.trial.FrozenTrial]:
        return [first_objective_trial(t) for t in self._storage.get_all_trials(study_id, deepcopy=False, states=states)]


def first_objective_trial(trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """A shallow copy of ``trial`` as the first objective's trial: its values cut to the first,
    its per-epoch first-objective values as intermediate values."""
    out = copy.copy(trial)
    curve = trial.system_attrs.get(TrialSystemAttr.FIRST_OBJECTIVE_CURVE, {})
    out.intermediate_values = {int(step): value for step, value in curve.items()}
    if trial.values is not None:
        out.values = trial.values[:1]
    return out


def report(trial: optuna.Trial, value: float, step: int) -> None:
    """Record the first objective's value at ``step`` (``Trial.report`` for multi-objective)."""
    storage, trial_id = optuna_compat.storage(trial.study), optuna_compat.trial_id(trial)
    curve = dict(storage.get_trial(trial_id).system_attrs.get(TrialSystemAttr.FIRST_OBJECTIVE_CURVE, {}))
    if str(step) in curve:  # as Trial.report: the first value reported for a step stays
        return
    curve[str(step)] = float(value)
    storage.set_trial_system_attr(trial_id, TrialSystemAttr.FIRST_OBJECTIVE_CURVE, curve)


def should_prune(trial: optuna.Trial) -> bool:
    """The study's pruner on the first objective's values (``Trial.should_prune`` for
    multi-objective): the pruner sees a single-objective study, through
    :class:`FirstObjectiveStorage`."""
    study = trial.study
    storage = FirstObjectiveStorage(optuna_compat.storage(study), study.directions[0])
    view = optuna.Study(study_name=study.study_name, storage=storage, sampler=study.sampler, pruner=study.pruner)
    return study.pruner.prune(view, storage.get_trial(optuna_compat.trial_id(trial)))


def front_mask(values: Sequence[Sequence[float | None]], directions: Sequence[str]) -> list[bool]:
    """Which rows of ``values`` (one per trial, one column per objective) are non-dominated.
    Rows with a missing or non-finite value are never on the front."""
    if not values:
        return []
    ok = np.array([len(v) == len(directions) and all(x is not None and math.isfinite(x) for x in v) for v in values])
    mask = np.zeros(len(values), dtype=bool)
    if ok.any():
        sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        loss = np.array([v for v, good in zip(values, ok, strict=True) if good], dtype=float) * sign
        mask[ok] = optuna_compat.is_pareto_front(loss)
    return mask.tolist()
