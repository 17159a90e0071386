"""Every use of Optuna's private internals, in one place.

rnntune leans on a few things Optuna does not promise: its table objects (the status endpoints
aggregate trials in SQL so that they stay fast at 10,000 trials, and the lease sweep fails a lost
worker's trial in the same transaction as its ticket), the storage ids of a study and a trial (our
rows point at them), and, for studies with several objectives (service/trials/pareto.py), a study's
storage object and Optuna's Pareto-front test. The names below are what Optuna 5 calls them
(``optuna>=5,<6`` in pyproject.toml); ``tests/service/test_optuna_compat.py`` checks each against
the installed Optuna and fails naming the piece when a release moves one. Nothing else in rnntune
touches a private Optuna name.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import json_to_distribution
from optuna.storages._rdb import models as _models
from optuna.study._frozen import FrozenStudy as FrozenStudy  # BaseStorage.get_all_studies's type, not exported
from optuna.study._multi_objective import _is_pareto_front
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, delete, insert, select, update

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


@dataclass(frozen=True)
class TrialFacts:
    """What the lease sweep needs to know of a ticket's trial, read in its own transaction."""

    state: str  # Optuna's TrialState name
    number: int
    params: dict[str, Any]
    user_attrs: dict[str, Any]


def trial_facts(conn: Connection, trial_ids: list[int]) -> dict[int, TrialFacts]:
    """{trial id: its state, number, parameters (external values) and user attributes}."""
    if not trial_ids:
        return {}
    rows = conn.execute(
        select(trials_t.c.trial_id, trials_t.c.number, trials_t.c.state).where(trials_t.c.trial_id.in_(trial_ids))
    ).all()
    params: dict[int, dict[str, Any]] = {tid: {} for tid in trial_ids}
    for tid, name, value, dist in conn.execute(
        select(params_t.c.trial_id, params_t.c.param_name, params_t.c.param_value, params_t.c.distribution_json)
        .where(params_t.c.trial_id.in_(trial_ids))
        .order_by(params_t.c.param_id)
    ):
        params[tid][name] = json_to_distribution(dist).to_external_repr(value)
    attrs: dict[int, dict[str, Any]] = {tid: {} for tid in trial_ids}
    for tid, key, value_json in conn.execute(
        select(uattrs_t.c.trial_id, uattrs_t.c.key, uattrs_t.c.value_json).where(uattrs_t.c.trial_id.in_(trial_ids))
    ):
        attrs[tid][key] = json.loads(value_json)
    return {r.trial_id: TrialFacts(_state_name(r.state), r.number, params[r.trial_id], attrs[r.trial_id]) for r in rows}


def fail_running_trial(conn: Connection, trial_id: int, user_attrs: dict[str, Any], now: Any) -> bool:
    """Mark a RUNNING trial FAIL with ``user_attrs`` set, in the caller's transaction (the lease
    sweep's, beside the ticket it judges). ``now``: the completion time (the database's clock).
    Returns False, changing nothing, when the trial is not RUNNING."""
    done = conn.execute(
        update(trials_t)
        .where(trials_t.c.trial_id == trial_id, trials_t.c.state == TrialState.RUNNING)
        .values(state=TrialState.FAIL, datetime_complete=now)
    )
    if done.rowcount != 1:
        return False
    set_user_attrs(conn, trial_id, user_attrs)
    return True


def set_user_attrs(conn: Connection, trial_id: int, user_attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr`` for each item, in the caller's transaction."""
    if not user_attrs:
        return
    conn.execute(delete(uattrs_t).where(uattrs_t.c.trial_id == trial_id, uattrs_t.c.key.in_(list(user_attrs))))
    conn.execute(
        insert(uattrs_t),
        [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in user_attrs.items()],
    )


def _state_name(value: Any) -> str:
    return value.name if hasattr(value, "name") else str(value)
