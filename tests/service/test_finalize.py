"""``trials.finalize``: a finished study's result, worker side (the result a user reads is
tests/service/test_results.py's; the baselines beside the model are tests/service/test_baselines.py's;
a worker dying during finalize is tests/lifecycle/test_lifecycle_failures.py's)."""

from __future__ import annotations

import pytest

from tests.service.test_results import SPEC, train


@pytest.fixture(scope="module")
def trained(client, settings):
    return train(client, settings)


def test_finalize_stops_when_asked_and_keeps_the_stored_model(trained, client, settings):
    import threading

    from rnntune.models.train import TrainingStopped
    from rnntune.service.data.data_cache import DataCache
    from rnntune.service.spec import StudySpec
    from rnntune.service.store import model_store
    from rnntune.service.studies import registry
    from rnntune.service.trials import finalize
    from rnntune.service.trials.outcome import Interrupted

    sessions = client.app.state.sessions
    with sessions() as s:
        row = registry.get_study(s, SPEC["name"])
        before = model_store.get_model(s, row.id).sha256
    stop = threading.Event()
    stop.set()
    with pytest.raises((Interrupted, TrainingStopped)):
        finalize.finalize_study(
            spec=StudySpec.model_validate(row.spec), study=trained, study_id=row.id, sessions=sessions,
            device="cpu", data_cache=DataCache(), stop=stop,
        )  # fmt: skip
    with sessions() as s:
        assert model_store.get_model(s, row.id).sha256 == before
