"""Optuna's private internals that rnntune uses (service/store/optuna_compat.py), checked against the
installed Optuna: when a release renames a table column, an id attribute or the stale-trial
query, these fail naming it, instead of a status page or a worker breaking at run time."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa

from rnntune.service.reports.results import TRIAL_STATES
from rnntune.service.store import optuna_compat

# every column our SQL reads or writes (service/reports/results.py, service/reports/metrics.py, benchmarks/api.py)
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


def test_the_lease_sweep_reads_and_fails_a_trial_as_optuna_stores_it(sqlite_url):
    """The lease sweep reads a lost worker's trial (state, parameters, user attributes) and
    fails it in its own transaction, through Optuna's tables: what it writes, Optuna reads back."""
    storage = optuna.storages.RDBStorage(sqlite_url)
    study = optuna.create_study(storage=storage, study_name="compat-sweep")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("cell", ["lstm", "gru"])
    trial.set_user_attr("epochs", 2)
    tid = optuna_compat.trial_id(trial)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        (facts,) = optuna_compat.trial_facts(conn, [tid]).values()
        assert (facts.state, facts.number, facts.user_attrs) == ("RUNNING", 0, {"epochs": 2})
        assert facts.params == trial.params
        now = sa.func.current_timestamp()
        assert optuna_compat.fail_running_trial(conn, tid, {"interrupted": "lost", "epochs": 3}, now)
        assert not optuna_compat.fail_running_trial(conn, tid, {"interrupted": "twice"}, now)  # no longer RUNNING
    engine.dispose()
    (frozen,) = optuna.load_study(study_name="compat-sweep", storage=storage).trials
    assert frozen.state == optuna.trial.TrialState.FAIL and frozen.datetime_complete is not None
    assert frozen.user_attrs == {"interrupted": "lost", "epochs": 3}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(tid, optuna.trial.TrialState.COMPLETE, [1.0])


def test_study_storage_and_pareto_front_are_optunas():
    """service/trials/pareto.py reads a study's storage and Optuna's own Pareto-front test."""
    import numpy as np

    study = optuna.create_study(directions=["minimize", "minimize"])
    trial = study.ask()
    optuna_compat.storage(study).set_trial_system_attr(optuna_compat.trial_id(trial), "k", 1)
    assert study.trials[0].system_attrs == {"k": 1}
    front = optuna_compat.is_pareto_front(np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]]))
    assert front.tolist() == [True, True, False, True]
