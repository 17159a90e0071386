"""Optuna's private internals that rnntune uses (service/optuna_compat.py), checked against the
installed Optuna: when a release renames a table column, an id attribute or the stale-trial
query, these fail naming it, instead of a status page or a worker breaking at run time."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy as sa

from rnntune.service import optuna_compat
from rnntune.service.results import TRIAL_STATES

# every column our SQL reads or writes (service/results.py, service/metrics.py, benchmarks/api.py)
COLUMNS = {
    "studies_t": {"study_id", "study_name"},
    "trials_t": {"trial_id", "study_id", "number", "state", "datetime_start", "datetime_complete"},
    "values_t": {"trial_id", "objective", "value", "value_type"},
    "params_t": {"param_id", "trial_id", "param_name", "param_value", "distribution_json"},
    "inter_t": {"trial_id", "step", "intermediate_value", "intermediate_value_type"},
    "uattrs_t": {"trial_id", "key", "value_json"},
    "sattrs_t": {"trial_id", "key", "value_json"},  # several objectives: the first one's curve
}


@pytest.mark.parametrize("table", sorted(COLUMNS))
def test_optuna_tables_have_the_columns_we_read(table):
    columns = set(getattr(optuna_compat, table).c.keys())
    missing = COLUMNS[table] - columns
    assert not missing, f"Optuna {optuna.__version__}: {table} lacks {sorted(missing)}"


def test_stored_enum_names_are_the_ones_we_compare():
    states = set(optuna_compat.trials_t.c.state.type.enums)
    assert set(TRIAL_STATES) <= states, f"Optuna {optuna.__version__} stores trial states {sorted(states)}"
    assert optuna_compat.FINITE in optuna_compat.values_t.c.value_type.type.enums
    inter = optuna_compat.TrialIntermediateValueModel.TrialIntermediateValueType
    assert "FINITE" in inter.__members__  # benchmarks/api.py writes intermediate values directly


@pytest.fixture
def storage(sqlite_url):
    return optuna.storages.RDBStorage(sqlite_url)


def test_study_and_trial_ids_are_the_storage_rows(storage):
    study = optuna.create_study(storage=storage, study_name="compat-ids")
    trial = study.ask()
    study.tell(trial, 1.0)
    sid = optuna_compat.study_id(study)
    assert sid == storage.get_study_id_from_name("compat-ids")
    tid = storage.get_trial_id_from_study_id_trial_number(sid, trial.number)
    assert optuna_compat.trial_id(trial) == tid
    assert optuna_compat.trial_id(study.trials[0]) == tid  # a FrozenTrial
    with sa.create_engine(storage.url).connect() as conn:
        row = conn.execute(sa.select(optuna_compat.trials_t.c.study_id).where(optuna_compat.trials_t.c.trial_id == tid))
        assert row.scalar_one() == sid


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() rather than optimize()
def test_fail_stale_trials_asks_our_stale_trial_hook(sqlite_url):
    """Optuna's fail_stale_trials (run before each trial with a heartbeat) must go through
    StaleCheckStorage.stale_trial_ids: the worker throttles that query there (service/db.py)."""
    asked: list[int] = []

    class Recording(optuna_compat.StaleCheckStorage):
        def stale_trial_ids(self, study_id: int) -> list[int]:
            asked.append(study_id)
            return super().stale_trial_ids(study_id)

    storage = Recording(sqlite_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="compat-stale")
    trial = study.ask()
    storage.record_heartbeat(optuna_compat.trial_id(trial))
    time.sleep(2.1)  # the heartbeat is now older than the grace period
    optuna.storages.fail_stale_trials(study)
    assert asked == [optuna_compat.study_id(study)], "Optuna no longer asks _get_stale_trial_ids"
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


def test_study_storage_and_pareto_front_are_optunas():
    """service/pareto.py reads a study's storage and Optuna's own Pareto-front test."""
    import numpy as np

    study = optuna.create_study(directions=["minimize", "minimize"])
    trial = study.ask()
    optuna_compat.storage(study).set_trial_system_attr(optuna_compat.trial_id(trial), "k", 1)
    assert study.trials[0].system_attrs == {"k": 1}
    front = optuna_compat.is_pareto_front(np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]]))
    assert front.tolist() == [True, True, False, True]
