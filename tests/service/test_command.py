"""Command trials, the child's side: a real child process per test (plain Python, no torch), the
report pipe and the stdout protocol, pruning that stops the child within one report, a crash's
stderr, the time limit, a stop from the worker, and where a script may live."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from rnntune.service.trials import command

CHILD = """
import json, os, sys, time
from rnntune import final, params, report

p = params()
out = sys.argv[1]
with open(os.path.join(out, "pid"), "w") as f:
    f.write(str(os.getpid()))
with open(os.path.join(out, "env.json"), "w") as f:
    json.dump({"params": p, "argv": sys.argv[2:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
if p.get("crash"):
    print("about to fail", file=sys.stderr)
    raise RuntimeError("boom: the user's script crashed")
for step in range(1, int(p.get("steps", 5)) + 1):
    if p.get("stdout"):
        print(f"RNNTUNE_REPORT step={step} value={p['x'] + 1.0 / step}", flush=True)
    else:
        report(step, p["x"] + 1.0 / step)
    with open(os.path.join(out, f"step-{step}"), "w") as f:
        f.write("done")
    time.sleep(float(p.get("sleep", 0.01)))
if p.get("stdout"):
    print(f"RNNTUNE_FINAL value={p['x']}", flush=True)
else:
    final(p["x"])
"""


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "allowed" / "child.py"
    path.parent.mkdir()
    path.write_text(CHILD)
    return path


def _run(script: Path, out: Path, params: dict, *, prune_at: int | None = None, stop=None, **kwargs):
    reports = []

    def on_report(step: int, value: float) -> bool:
        reports.append((step, value))
        return prune_at is not None and step >= prune_at

    argv = command.build_argv(["python", "child.py", str(out), "--lr", "{x}"], params, script)
    result = command.run(
        argv,
        params,
        cwd=script.parent,
        device=kwargs.pop("device", "cpu"),
        on_report=on_report,
        stop=stop or threading.Event(),
        timeout_s=kwargs.pop("timeout_s", 60),
        grace_s=kwargs.pop("grace_s", 2.0),
    )
    return result, reports


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("stdout", [False, True], ids=["report-pipe", "stdout-lines"])
def test_reports_reach_the_worker_and_the_final_value_is_the_trial_s(script, tmp_path, stdout):
    result, reports = _run(script, tmp_path, {"x": 0.25, "steps": 3, "stdout": stdout}, device="cuda:1")
    assert result.state == "COMPLETE" and result.value == 0.25 and result.steps == 3
    assert reports == [(1, 1.25), (2, 0.75), (3, 0.25 + 1 / 3)]
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["argv"] == ["--lr", "0.25"]  # {x} replaced, no shell
    assert seen["params"]["x"] == 0.25  # and the JSON file
    assert seen["cuda"] == "1"  # the worker's device


def test_a_pruned_child_is_gone_within_one_report(script, tmp_path):
    result, reports = _run(script, tmp_path, {"x": 1.0, "steps": 50, "sleep": 0.05}, prune_at=2)
    assert result.state == "PRUNED" and [s for s, _ in reports] == [1, 2]
    pid = int((tmp_path / "pid").read_text())
    assert _gone(pid)
    # report() blocks until the pruner decided: the child never got past step 2
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-1"]


def test_a_pruned_stdout_child_is_stopped_before_its_next_report(script, tmp_path):
    result, reports = _run(script, tmp_path, {"x": 1.0, "steps": 50, "sleep": 0.5, "stdout": True}, prune_at=2)
    assert result.state == "PRUNED" and [s for s, _ in reports] == [1, 2]
    assert _gone(int((tmp_path / "pid").read_text()))
    assert not (tmp_path / "step-3").exists()


def test_a_crashing_child_fails_with_the_tail_of_its_stderr(script, tmp_path):
    with pytest.raises(command.CommandFailed) as info:
        _run(script, tmp_path, {"x": 1.0, "crash": True})
    assert "exited with code 1" in str(info.value)
    assert "RuntimeError: boom: the user's script crashed" in str(info.value)


def test_the_time_limit_stops_the_child(script, tmp_path):
    started = time.monotonic()
    with pytest.raises(command.CommandFailed, match="time limit of 1 s"):
        _run(script, tmp_path, {"x": 1.0, "steps": 100, "sleep": 0.2}, timeout_s=1)
    assert time.monotonic() - started < 10
    assert _gone(int((tmp_path / "pid").read_text()))


def test_a_stop_from_the_worker_stops_the_child(script, tmp_path):
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    with pytest.raises(command.CommandStopped):
        _run(script, tmp_path, {"x": 1.0, "steps": 100, "sleep": 0.2}, stop=stop)
    assert _gone(int((tmp_path / "pid").read_text()))


def test_scripts_resolve_only_inside_the_allowed_directories(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "train.py").write_text("")
    (outside / "evil.py").write_text("")
    (allowed / "link.py").symlink_to(outside / "evil.py")  # a symlink out is outside
    dirs = [allowed]
    assert command.resolve_script("train.py", dirs) == (allowed / "train.py").resolve()
    assert command.resolve_script(str(allowed / "train.py"), dirs) is not None
    assert command.resolve_script(str(outside / "evil.py"), dirs) is None
    assert command.resolve_script("link.py", dirs) is None
    assert command.resolve_script("missing.py", dirs) is None
    assert command.resolve_script("train.py", []) is None  # no directory allowed: nothing runs


@pytest.mark.parametrize(
    "argv, why",
    [
        (["python", "-c", "import os"], "no options before it"),
        (["bash", "-c", "rm -rf /"], "no options before it"),
        (["python", "../train.py"], "'..'"),
        (["python", "sub/../../train.py"], "'..'"),
        (["python", "{lr}.py"], "plain file name"),
        (["python", "train.py", "{nope}"], "{nope} is not a parameter"),
        (["python"], "no options before it"),
    ],
)
def test_a_command_that_could_run_anything_but_a_script_is_refused(argv, why):
    with pytest.raises(ValueError, match=why.replace("{", r"\{").replace("(", r"\(")):
        command.check_command(argv, ["lr"])


def test_the_worker_s_device_reaches_the_child_in_the_worker_s_own_ids():
    assert command.cuda_visible("cpu") == ""  # a CPU worker's child sees no GPU
    assert command.cuda_visible("cuda:1") == "1"
    assert command.cuda_visible("cuda:1", "4,5") == "5"  # cuda:1 of a worker that sees GPUs 4 and 5
    assert command.cuda_visible("cuda", "4,5") is None  # unchanged: the child sees what the worker sees


def test_the_child_runs_the_worker_s_interpreter(tmp_path):
    script = tmp_path / "t.py"
    assert command.build_argv(["python3", "t.py", "-x", "{a}"], {"a": True}, script) == [
        sys.executable,
        str(script),
        "-x",
        "true",
    ]
