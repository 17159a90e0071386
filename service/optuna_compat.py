"""Every use of Optuna's private internals, in one place.

rnntune leans on a few things Optuna does not promise: its table objects (the status endpoints
aggregate trials in SQL so that they stay fast at 10,000 trials), the storage ids of a study and a
trial (our rows point at them), the stale-trial query the storage runs before every trial (a
worker runs it less often), and, for studies with several objectives (service/pareto.py), a
study's storage object and Optuna's Pareto-front test. The names below are what Optuna 5 calls them (``optuna>=5,<6`` in
pyproject.toml); ``tests/service/test_optuna_compat.py`` checks each against the installed Optuna
and fails naming the piece when a release moves one. Nothing else in rnntune touches a private
Optuna name.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.storages._rdb import models as _models
from optuna.study._multi_objective import _is_pareto_front
from optuna.trial import FrozenTrial

# Optuna's SQLAlchemy models of its own tables (``optuna.storages._rdb.models``).
StudyModel = _models.StudyModel
TrialModel = _models.TrialModel
TrialValueModel = _models.TrialValueModel
TrialParamModel = _models.TrialParamModel
TrialIntermediateValueModel = _models.TrialIntermediateValueModel
TrialUserAttributeModel = _models.TrialUserAttributeModel
TrialSystemAttributeModel = _models.TrialSystemAttributeModel

# Their tables, for SQL Core queries.
studies_t = StudyModel.__table__
trials_t = TrialModel.__table__
values_t = TrialValueModel.__table__
params_t = TrialParamModel.__table__
inter_t = TrialIntermediateValueModel.__table__
uattrs_t = TrialUserAttributeModel.__table__
sattrs_t = TrialSystemAttributeModel.__table__

# ``trial_values.value_type`` of a finite value (the enum is stored by name; inf/-inf are the others).
FINITE = TrialValueModel.TrialValueType.FINITE.name


def study_id(study: optuna.Study) -> int:
    """The study's row id in Optuna's ``studies`` table."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's row id in Optuna's ``trials`` table (what the storage's trial methods take)."""
    return trial._trial_id


def storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object a study reads and writes through (a trial's ``trial.study``'s too)."""
    return study._storage


def set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """``Study.set_metric_names`` is marked experimental (since Optuna 3.2, still in 5.0): call it
    without the warning on every study created."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def is_pareto_front(loss_values: np.ndarray) -> np.ndarray:
    """For each row of ``loss_values`` (trials x objectives, every objective to minimise): is it
    on the Pareto front? Optuna's own test (``optuna.study._multi_objective``)."""
    return _is_pareto_front(loss_values, assume_unique_lexsorted=False)


class StaleCheckStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose stale-trial query is the public ``stale_trial_ids``.

    With a heartbeat, Optuna's ``fail_stale_trials`` (run before each trial) asks the storage's
    private ``_get_stale_trial_ids`` for the study's trials whose heartbeat is older than the grace
    period; it is routed here so that a subclass overrides ``stale_trial_ids`` instead."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """Ids of the study's running trials whose heartbeat is older than the grace period."""
        return super()._get_stale_trial_ids(study_id)
