"""Attack 8: a command child saw the worker's whole environment (the database URL came back in a
failed trial's stderr) and outlived a ``kill -9``ed worker at full CPU.

Now the child gets an allow-list of variables (``RNNTUNE_COMMAND_ENV`` widens it, never to the
database URL or a token) and dies with its worker, and so does everything it started: its
processes, even one in a session of its own, end with the worker's ``kill -9`` or with the
script's own exit (``service.reaper``)."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from rnntune.service.config import Settings
from rnntune.service.trials import command
from rnntune.service.trials.child import child_env
from tests.conftest import wait_for
from tests.queue_helpers import kill9

SECRET_URL = "postgresql+psycopg2://rnntune:pw-never-in-a-child@db/rnntune"

# Writes its pid and environment, then computes quietly forever: no report, no output.
QUIET = """
import json, os, sys
out = sys.argv[1]
with open(os.path.join(out, "env.json.tmp"), "w") as f:
    json.dump(dict(os.environ), f)
os.replace(os.path.join(out, "env.json.tmp"), os.path.join(out, "env.json"))
with open(os.path.join(out, "pid"), "w") as f:
    f.write(str(os.getpid()))
while True:
    pass
"""


# Starts two grandchildren that write their pids and sleep (one in the script's group, one in a
# session of its own, as a daemon would), then writes its own pid and computes quietly forever.
SPAWNS = """
import os, subprocess, sys, time
out = sys.argv[1]
sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(1000)"
for name, session in (("grandchild", False), ("daemon", True)):
    subprocess.Popen([sys.executable, "-c", sleeper, os.path.join(out, name)], start_new_session=session)
while not all(os.path.exists(os.path.join(out, n)) for n in ("grandchild", "daemon")):
    time.sleep(0.05)
with open(os.path.join(out, "pid"), "w") as f:
    f.write(str(os.getpid()))
while True:
    pass
"""

# Leaves a sleeper behind, holding its stdout, and exits with a value.
LEAVES = """
import os, subprocess, sys
out = sys.argv[1]
sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(1000)"
subprocess.Popen([sys.executable, "-c", sleeper, os.path.join(out, "left")])
while not os.path.exists(os.path.join(out, "left")):
    pass
print("RNNTUNE_FINAL value=0.5", flush=True)
"""


def _pids(out: Path, *names: str) -> list[int]:
    return [int((out / n).read_text()) for n in names if (out / n).is_file() and (out / n).read_text()]


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for whoever adopted it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_the_child_environment_is_an_allow_list(monkeypatch):
    worker_env = {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "LC_ALL": "C.UTF-8",
        "CUDA_HOME": "/usr/local/cuda",
        "RNNTUNE_DATABASE_URL": SECRET_URL,
        "RNNTUNE_API_TOKENS": "a-token-0123456789abcdef",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "WANDB_API_KEY": "wandb-key",
    }
    assert child_env(worker_env) == {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "LC_ALL": "C.UTF-8",
        "CUDA_HOME": "/usr/local/cuda",
    }
    # the operator widens it; the database URL and tokens stay out even under a catch-all
    assert "WANDB_API_KEY" in child_env(worker_env, ["WANDB_*"])
    everything = child_env(worker_env, ["*"])
    assert "RNNTUNE_DATABASE_URL" not in everything and "RNNTUNE_API_TOKENS" not in everything
    with pytest.raises(ValueError, match="RNNTUNE_COMMAND_ENV"):
        Settings(command_env="WANDB_API_KEY,RNNTUNE_DATABASE_URL")
    assert Settings(command_env="WANDB_API_KEY, AWS_*").command_env


def test_a_child_never_sees_the_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNTUNE_DATABASE_URL", SECRET_URL)
    monkeypatch.setenv("RNNTUNE_API_TOKENS", "a-token-0123456789abcdef")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-key")
    script = tmp_path / "dump.py"
    script.write_text(
        "import json, os, sys\nprint(json.dumps(dict(os.environ)), file=sys.stderr)\nraise SystemExit(3)\n"
    )
    with pytest.raises(command.CommandFailed) as failed:
        command.run(
            [sys.executable, str(script)],
            {},
            cwd=tmp_path,
            device="cpu",
            on_report=lambda step, value: False,
            stop=threading.Event(),
            timeout_s=30,
        )
    message = str(failed.value)  # a failed trial's error: what GET /v1/studies/.../trials shows
    assert "pw-never-in-a-child" not in message and "RNNTUNE_DATABASE_URL" not in message
    assert "a-token-0123456789abcdef" not in message
    assert "WANDB_API_KEY" not in message  # nor anything the operator did not allow
    assert '"PATH"' in message and "RNNTUNE_PARAMS_FILE" in message  # what it needs, the protocol's own


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_quiet_child_dies_with_its_kill_9ed_worker(env, tmp_path):
    allowed = tmp_path / "scripts"
    allowed.mkdir()
    (allowed / "quiet.py").write_text(QUIET)
    out = tmp_path / "out"
    out.mkdir()
    env.create(
        {
            "name": "quiet",
            "objective": {"command": ["python", "quiet.py", str(out)], "timeout_s": 600},
            "direction": "minimize",
            "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "budget": {"n_trials": 1},
        }
    )
    worker = env.worker("--allow-commands", str(allowed), env={"RNNTUNE_API_TOKENS": "a-token-0123456789abcdef"})
    try:
        wait_for(lambda: (out / "pid").is_file() and (out / "pid").read_text(), 90, 0.2, "the command child")
        pid = int((out / "pid").read_text())
        seen = json.loads((out / "env.json").read_text())
        assert "RNNTUNE_DATABASE_URL" not in seen and "RNNTUNE_API_TOKENS" not in seen, sorted(seen)
        assert env.url.rsplit("/", 1)[1] not in json.dumps(seen)  # not under another name either
        assert "PATH" in seen and seen["RNNTUNE_PARAMS_FILE"]
        assert not _gone(pid)
        kill9(worker)
        wait_for(lambda: _gone(pid), 5, 0.1, f"the command child {pid} to die with its worker")
    finally:
        if worker.poll() is None:
            kill9(worker)
        if (out / "pid").is_file() and not _gone(pid := int((out / "pid").read_text())):
            os.kill(pid, 9)  # on failure: never leave a spinning child behind


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_what_the_child_started_dies_with_its_kill_9ed_worker(env, tmp_path):
    allowed = tmp_path / "scripts"
    allowed.mkdir()
    (allowed / "spawns.py").write_text(SPAWNS)
    out = tmp_path / "out"
    out.mkdir()
    env.create(
        {
            "name": "spawns",
            "objective": {"command": ["python", "spawns.py", str(out)], "timeout_s": 600},
            "direction": "minimize",
            "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "budget": {"n_trials": 1},
        }
    )
    worker = env.worker("--allow-commands", str(allowed))
    try:
        wait_for(lambda: len(_pids(out, "pid", "grandchild", "daemon")) == 3, 90, 0.2, "the child and its children")
        pids = _pids(out, "pid", "grandchild", "daemon")
        assert not any(_gone(pid) for pid in pids)
        kill9(worker)
        wait_for(lambda: all(_gone(pid) for pid in pids), 5, 0.1, f"{pids} to die with their worker")
    finally:
        if worker.poll() is None:
            kill9(worker)
        for pid in _pids(out, "pid", "grandchild", "daemon"):
            if not _gone(pid):
                os.kill(pid, 9)  # on failure: never leave a process behind


def test_what_a_finished_child_left_running_is_ended(tmp_path):
    """A script that exits leaving a process behind (holding its stdout) completes at once, and
    the process is gone: before, the trial waited on the open pipe until its time limit."""
    (tmp_path / "leaves.py").write_text(LEAVES)
    try:
        result = command.run(
            [sys.executable, str(tmp_path / "leaves.py"), str(tmp_path)],
            {},
            cwd=tmp_path,
            device="cpu",
            on_report=lambda step, value: False,
            stop=threading.Event(),
            timeout_s=20,
        )
        assert (result.state, result.value) == ("COMPLETE", 0.5)
        assert result.seconds < 10
        (left,) = _pids(tmp_path, "left")
        wait_for(lambda: _gone(left), 5, 0.1, f"the process {left} the script left behind to end")
    finally:
        for pid in _pids(tmp_path, "left"):
            if not _gone(pid):
                os.kill(pid, 9)


def test_a_script_that_links_out_fails_its_study_with_a_reason(env, tmp_path):
    """The API host cannot see the workers' command directories (it accepted the spec), and the
    script there is a symlink out of them: the worker refuses it, and the study fails saying so,
    instead of waiting, unclaimed, without a reason."""
    allowed, outside = tmp_path / "scripts", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    ran = tmp_path / "ran"
    (outside / "evil.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\nprint('RNNTUNE_FINAL value=1')\n")
    (allowed / "evil.py").symlink_to(outside / "evil.py")
    name = env.create(
        {
            "name": "linked-out",
            "objective": {"command": ["python", "evil.py"]},
            "direction": "minimize",
            "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "budget": {"n_trials": 3},
        }
    )
    worker = env.worker("--allow-commands", str(allowed))
    try:
        assert env.wait_state(name, ("failed", "done", "cancelled"), 90) == "failed"
        summary = env.summary(name)  # what GET /v1/studies shows
        assert "symlink" in summary["reason"] and "RNNTUNE_COMMAND_DIRS" in summary["reason"], summary
        assert len(env.trials(name)) == 1  # refused once, not tried trial after trial
        assert not ran.exists()  # the target never ran
        assert worker.poll() is None  # and the worker goes on
    finally:
        kill9(worker)
