"""``rnntune serve`` with no ``--workers``: one single-threaded worker per usable core on CPU (one
per GPU where there are GPUs), at most SQLITE_MAX_WORKERS on SQLite. One worker with every
core's threads ran the demo study about half as fast on 2 cores (benchmarks/serve_workers.py)."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request

from rnntune.service.cli import SQLITE_MAX_WORKERS, default_workers, usable_cores
from rnntune.service.config import Settings
from tests.conftest import rnntune, wait_for


def test_default_workers_per_machine():
    sqlite = Settings(database_url="sqlite:///x.db")
    pg = Settings(database_url="postgresql+psycopg2://u@h/db")
    assert default_workers(pg, n_gpus=0) == usable_cores()
    assert default_workers(sqlite, n_gpus=0) == min(usable_cores(), SQLITE_MAX_WORKERS)
    assert default_workers(pg, n_gpus=3) == default_workers(sqlite, n_gpus=3) == 3


def _children(pid: int) -> list[list[str]]:
    """The command lines of ``pid``'s child processes."""
    out = []
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        for child in f.read().split():
            try:
                with open(f"/proc/{child}/cmdline", "rb") as c:
                    out.append(c.read().decode().split("\0")[:-1])
            except FileNotFoundError:
                pass
    return out


def test_serve_starts_one_single_threaded_worker_per_core(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = rnntune(
        "serve", "--port", str(port), env={"RNNTUNE_DATABASE_URL": f"sqlite:///{tmp_path}/rnntune.db"}, cwd=tmp_path
    )
    expected = min(usable_cores(), SQLITE_MAX_WORKERS)

    def registered():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/workers", timeout=5) as r:
                items = json.loads(r.read())["items"]
        except OSError:
            return None
        return len(items) == expected and items

    try:
        workers = wait_for(registered, 90, 0.5, f"{expected} workers to register")
        assert {w["device"] for w in workers} == {"cpu"}
        commands = [c for c in _children(serve.pid) if "worker" in c]
        assert len(commands) == expected
        for cmd in commands:
            threads = cmd[cmd.index("--threads") + 1]
            assert threads == str(max(1, usable_cores() // expected)), cmd
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
