"""Plugins and command specs in process, on PostgreSQL: what a spec may name (422 for anything
that reads as code or a path outside the allowed directories), routing by what a worker has, a
broken plugin failing its study once with the reason, and a model plugin's file re-created
through its entry point. tests/test_custom_training.py runs each route with real workers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from rnntune.service import plugins, queue, routing
from rnntune.service.cli import _worker_line
from rnntune.service.worker import Worker
from tests.conftest import REPO, make_settings
from tests.plugin_helpers import DIST, VERSION, make_plugin_dist

DATA = {"name": "plugin", "plugin": "tiny-sines", "params": {"n": 60}}


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    d = tmp_path_factory.mktemp("allowed")
    (d / "train.py").write_text("print('hi')\n")
    return d


@pytest.fixture(scope="module")
def settings(pg_url, tmp_path_factory, allowed):
    return make_settings(
        pg_url,
        tmp_path_factory.mktemp("data"),
        poll_interval_s=0.1,
        command_dirs=str(allowed),
        max_command_timeout_s=3600,
    )


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The test plugins, installed in this process only."""
    monkeypatch.syspath_prepend(str(make_plugin_dist(tmp_path / "site")))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("rnntune_test_plugins", None)


def _spec(name: str, **fields) -> dict:
    return {"name": name, "budget": {"n_trials": 2, "max_epochs": 2}, **fields}


def _objective(name: str, objective: dict, **fields) -> dict:
    space = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}
    return _spec(name, objective=objective, direction="minimize", search_space=space, **fields)


@pytest.mark.parametrize(
    "spec, loc",
    [
        (_objective("os-system", {"plugin": "os:system"}), ["body", "objective"]),
        (_objective("module-path", {"plugin": "mypkg.train"}), ["body", "objective"]),
        (_spec("model-path", data=DATA, model={"plugin": "mypkg.models:make"}), ["body", "model"]),
        (_spec("data-path", data={"name": "plugin", "plugin": "/etc/passwd"}), ["body", "data", "plugin"]),
        (_objective("dotdot", {"command": ["python", "../train.py"]}), ["body", "objective", "command"]),
        (_objective("dash-c", {"command": ["python", "-c", "import os"]}), ["body", "objective", "command"]),
        (_objective("abs-outside", {"command": ["python", "/etc/hostname"]}), ["body", "objective", "command"]),
        (_objective("abs-sh", {"command": ["/bin/sh", "{lr}"]}), ["body", "objective", "command"]),
        (
            _objective("long", {"command": ["python", "train.py"], "timeout_s": 7200}),
            ["body", "objective", "timeout_s"],
        ),
    ],
    ids=lambda v: v["name"] if isinstance(v, dict) else None,
)
def test_a_spec_that_names_code_or_a_path_outside_the_allowed_dirs_is_refused(client, spec, loc):
    r = client.post("/v1/studies", json=spec)
    assert r.status_code == 422, r.text
    assert any(e["loc"] == loc for e in r.json()["detail"]), r.json()


def test_a_script_inside_the_allowed_dirs_is_accepted(client, allowed):
    for name, script in (("rel-ok", "train.py"), ("abs-ok", str(allowed / "train.py"))):
        r = client.post("/v1/studies", json=_objective(name, {"command": ["python", script, "--lr", "{lr}"]}))
        assert r.status_code == 201, r.text
        assert r.json()["data"] == "command"


def test_a_worker_claims_only_what_it_can_run(client, settings, installed, allowed):
    spec = _spec("needs-model", data=DATA, model={"plugin": "tiny-gru"})
    assert client.post("/v1/studies", json=spec).status_code == 201
    with client.app.state.sessions() as s:
        requires = s.scalar(sa_select_requires("needs-model"))
        assert requires == {"plugins": ["rnntune.models:tiny-gru", "rnntune.datasets:tiny-sines"]}
        bare = {"plugins": [], "commands": False}
        queue.register_worker(s, "bare-1", device="cpu", labels=set(), pid=1, capabilities=bare)
    # the only live worker lacks the plugin: the study says so instead of waiting silently
    body = client.get("/v1/studies/needs-model").json()
    assert body["state"] == "queued"
    assert body["reason"] == (
        "waiting: no live worker can run it (needs plugin rnntune.datasets:tiny-sines, plugin rnntune.models:tiny-gru)"
    )
    with_plugin = routing.capabilities(commands=False)
    assert {"group": "rnntune.models", "name": "tiny-gru", "distribution": DIST, "version": VERSION} in with_plugin[
        "plugins"
    ]
    assert routing.missing({"plugins": ["rnntune.models:tiny-gru"]}, bare) == ["plugin rnntune.models:tiny-gru"]
    assert routing.missing({"plugins": ["rnntune.models:tiny-gru"]}, with_plugin) == []
    with client.app.state.sessions() as s:
        queue.register_worker(s, "full-1", device="cpu", labels=set(), pid=2, capabilities=with_plugin)
    assert client.get("/v1/studies/needs-model").json()["reason"] is None
    listed = client.get("/v1/plugins").json()
    tiny = [p for p in listed["items"] if p["name"] == "tiny-gru"]
    assert tiny == [
        {"group": "rnntune.models", "name": "tiny-gru", "distribution": DIST, "version": VERSION, "workers": 1}
    ]
    workers = {w["id"]: w for w in client.get("/v1/workers").json()["items"]}
    assert workers["bare-1"]["plugins"] == [] and any(p["name"] == "tiny-gru" for p in workers["full-1"]["plugins"])
    line = _worker_line(workers["full-1"])  # what `rnntune workers` prints
    assert f"plugin tiny-gru (rnntune.models, {DIST} {VERSION})" in line and "runs commands" not in line
    # the claim filter: a worker without a command directory never takes a command study
    worker = Worker(settings, device="cpu", threads=1, command_dirs=[])
    worker.commands = type(worker.commands)()  # no directory at all
    assert not worker.can_run({"command": "train.py"})
    assert worker.can_run({"plugins": ["rnntune.models:tiny-gru"]})
    allowed_worker = Worker(settings, device="cpu", threads=1)
    assert allowed_worker.can_run({"command": "train.py"}) and not allowed_worker.can_run({"command": "nope.py"})
    _cancel_all(client)


def sa_select_requires(name: str):
    import sqlalchemy as sa

    from rnntune.service.store.tables import StudyRow

    return sa.select(StudyRow.requires).where(StudyRow.name == name)


def _cancel_all(client):
    for item in client.get("/v1/studies").json()["items"]:
        if item["state"] in ("queued", "running", "paused"):
            client.post(f"/v1/studies/{item['name']}/cancel")


@pytest.mark.parametrize(
    "name, fields, why",
    [
        ("raising-model", {"data": DATA, "model": {"plugin": "raising-model"}}, "raised RuntimeError: this model"),
        ("wrong-shape", {"data": DATA, "model": {"plugin": "wrong-shape"}}, "the contract is (batch, output_size)"),
        ("raising-data", {"data": {"name": "plugin", "plugin": "raising-data"}}, "no data today"),
        ("not-a-number", {"objective": {"plugin": "not-a-number"}, "direction": "minimize"}, "must return a number"),
    ],
)
def test_a_broken_plugin_fails_its_study_once_with_the_reason(client, settings, installed, name, fields, why):
    _cancel_all(client)
    spec = _spec(name, **fields) | {"budget": {"n_trials": 4, "max_epochs": 2, "max_failed_trials": 4}}
    if "objective" in fields:
        spec["search_space"] = {"x": {"type": "float", "low": 0, "high": 1}}
    assert client.post("/v1/studies", json=spec).status_code == 201, spec
    Worker(settings, device="cpu", threads=1, exit_when_idle=True).run()
    body = client.get(f"/v1/studies/{name}").json()
    assert body["state"] == "failed", body
    assert why in body["reason"], body["reason"]
    assert body["counts"]["failed"] == 1  # not trial after trial


def test_a_model_plugin_s_file_is_re_created_through_its_entry_point(installed, tmp_path, monkeypatch):
    import numpy as np

    from rnntune.models import TrainConfig, fit, load_model, save_model
    from rnntune.service.search import hyperparameters
    from rnntune.service.spec import parse_spec
    from rnntune.service.trials.recipe import PluginModel, build_configs

    spec = parse_spec(_spec("file", data=DATA, model={"plugin": "tiny-gru", "hidden_size": 6}))
    hp = hyperparameters(spec, {})
    fn, _ = plugins.load("dataset", "tiny-sines")
    data = fn({"n": 60})
    model_config, _ = build_configs(spec, hp, data, device="cpu")
    factory = PluginModel("tiny-gru", spec, hp)
    factory.check(model_config, data)
    result = fit(model_config, TrainConfig(max_epochs=1, device="cpu"), data, model_factory=factory)
    path = tmp_path / "best.pt"
    save_model(path, model_config, result.state_dict, plugin=factory.record())
    predictor = load_model(path, device="cpu")
    assert type(predictor.model).__name__ == "TinyGRU"
    out = predictor.predict(np.zeros((3, 8, 1)))
    assert out.shape == (3, 1)
    # where the plugin is not installed, load_model names what to install
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.endswith("site")])
    importlib.invalidate_caches()
    with pytest.raises(ValueError, match=f"needs the model plugin 'tiny-gru'.*install {DIST}=={VERSION}"):
        load_model(path, device="cpu")


def test_import_rnntune_and_report_stay_torch_free():
    code = (
        "import sys; from rnntune import report, final, params, TrialPruned; "
        "report(1, 0.5); final(0.5); assert params() == {}; "
        "assert 'torch' not in sys.modules and 'optuna' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


SLOW_CHILD = """
import os, sys, time
from rnntune import report

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.pid"), "w") as f:
    f.write(str(os.getpid()))
for step in range(1, 1000):
    time.sleep(0.2)
    report(step, 1.0 / step)
"""


def test_cancelling_a_command_study_stops_its_child(client, settings, allowed):
    import os
    import threading
    import time

    _cancel_all(client)
    (allowed / "slow.py").write_text(SLOW_CHILD)
    fast = settings.model_copy(update={"lease_s": 8})
    spec = _objective("cancel-me", {"command": ["python", "slow.py"]})
    assert client.post("/v1/studies", json=spec).status_code == 201
    worker = Worker(fast, device="cpu", threads=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        pid_file = allowed / "child.pid"
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = int(pid_file.read_text())
        assert client.post("/v1/studies/cancel-me/cancel").status_code == 200
        deadline = time.monotonic() + 20  # the heartbeat (every 2 s) notices, the child gets SIGTERM
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the cancelled study's child is still running")
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert client.get("/v1/studies/cancel-me").json()["state"] == "cancelled"


def test_a_data_plugin_may_return_arrays_and_a_task(installed):
    from rnntune.service.data.data_cache import _plugin_data

    data = _plugin_data("sine-arrays", {"seed": 1})
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (35, 7, 8)
    assert data.task == "regression" and data.output_size == 1 and data.input_size == 2
