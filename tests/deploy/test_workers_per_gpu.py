"""``rnntune worker --per-gpu --workers-per-gpu N``: N worker processes on each visible GPU.

No GPU here: torch's device count is set to 2 and the started processes are recorded instead
of run; what is checked is which ``rnntune worker`` commands the supervisor starts.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import torch

from rnntune.service import cli
from rnntune.service.config import Settings


class Recorded:
    started: list[list[str]] = []

    def __init__(self, cmd, env=None):
        self.cmd, self.pid = cmd, 1000 + len(Recorded.started)
        Recorded.started.append(cmd)

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0


@pytest.mark.parametrize("per_gpu", [1, 3])
def test_workers_per_gpu_starts_n_workers_on_each_gpu(monkeypatch, per_gpu):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(subprocess, "Popen", Recorded)
    Recorded.started = []
    code = cli._supervise_gpu_workers(Settings(database_url="sqlite:///x.db"), ["gpu"], per_gpu)
    assert code == 0
    assert len(Recorded.started) == 2 * per_gpu
    devices = Counter(cmd[cmd.index("--device") + 1] for cmd in Recorded.started)
    assert devices == {"cuda:0": per_gpu, "cuda:1": per_gpu}
    assert all(cmd[cmd.index("--label") + 1] == "gpu" for cmd in Recorded.started)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers-per-gpu", "2"], "--workers-per-gpu: needs --per-gpu"),
        (["--per-gpu", "--workers-per-gpu", "0"], "--workers-per-gpu"),
    ],
)
def test_workers_per_gpu_refuses_bad_values(args, message):
    r = subprocess.run(
        [sys.executable, "-m", "rnntune.service.cli", "worker", *args, "--database-url", "sqlite:///unused.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and message in r.stderr
