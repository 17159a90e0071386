"""Attacks 3 and 4, measured where the work happens: a real worker process claims a poisoned
study and its peak memory (``VmHWM``, read from /proc while it runs) stays under 2x the file
plus :data:`MARGIN`, measured from its peak after a small study of the same kind.

The files sit under a data root (``RNNTUNE_DATA_ROOTS``), where the API never opens them: the
workers' loader is the only check between them and a trial.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.queue_helpers import kill9
from tests.security.test_size_bombs import class_bomb, long_rows_csv

MB = 2**20
MARGIN = 64 * MB  # fixed allowance: a first text batch's buffers, the split index arrays, allocator slack
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def study(name: str, data: dict, **extra) -> dict:
    return {
        "name": name,
        "data": data,
        "model": {"hidden_size": 4, "num_layers": 1, "cell": "gru", **extra.pop("model", {})},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 1, "max_epochs": 1},
        **extra,
    }


def run_bomb(env, root: Path, control: dict, bomb: dict, size: int, *, expect: str) -> tuple[str, str | None]:
    """Run ``control`` then ``bomb`` on one worker; return the bomb's (state, reason) after
    asserting the worker's peak grew by less than 2 x ``size`` + MARGIN between them."""
    worker = env.worker(env={"RNNTUNE_DATA_ROOTS": str(root), "RNNTUNE_ALLOW_ROOT_TEXT": "true"})
    try:
        env.create(control)
        assert env.wait_state(control["name"], ("done", "failed", "cancelled"), 180) == "done"
        before = peak_rss(worker.pid)
        env.create(bomb)
        state = env.wait_state(bomb["name"], ("done", "failed", "cancelled"), 300)
        grown = peak_rss(worker.pid) - before
        assert worker.poll() is None, "the worker died on the bomb"
        assert grown < 2 * size + MARGIN, f"the worker's peak grew by {grown / MB:.0f} MB on a {size / MB:.2f} MB file"
        print(f"{bomb['name']}: worker peak +{grown / MB:.1f} MB for a {size / MB:.2f} MB file")
        assert state == expect, env.study_state(bomb["name"])
        return env.study_state(bomb["name"])
    finally:
        kill9(worker)


def test_a_class_count_bomb_costs_a_worker_no_more_than_its_size(env, tmp_path):
    """879 bytes with the label 99999: every trial tried to allocate 80 GB."""
    buffer = io.BytesIO()
    np.savez(buffer, X=np.zeros((40, 4, 1), dtype=np.float32), y=np.arange(40) % 3)
    (tmp_path / "small.npz").write_bytes(buffer.getvalue())
    bomb = class_bomb()
    (tmp_path / "classes.npz").write_bytes(bomb)
    npz = {"name": "npz", "path": str(tmp_path / "small.npz")}
    control = study("small-classes", npz, metric="val_accuracy")
    poisoned = study("class-bomb", {**npz, "path": str(tmp_path / "classes.npz")}, metric="val_accuracy")
    state, reason = run_bomb(env, tmp_path, control, poisoned, len(bomb), expect="failed")
    assert "RNNTUNE_MAX_CLASSES" in reason and "100000 classes" in reason


def test_a_text_bomb_costs_a_worker_no_more_than_twice_its_size(env, tmp_path):
    """1,000 short rows and 3 rows of 40,000 tokens, no max_length: padded to the longest row this
    was 1003 x 40000 int64 ids (321 MB) and their embeddings in every batch; kept to
    RNNTUNE_MAX_TEXT_LENGTH tokens it trains in a small multiple of the file."""
    (tmp_path / "small").mkdir()
    small = long_rows_csv(tmp_path / "small", n_short=200, n_long=1, long_tokens=20)
    path = long_rows_csv(tmp_path, n_short=1000, n_long=3, long_tokens=40_000)
    text = {"name": "text", "params": {"path": str(small)}}
    model = {"embed_dim": 8}
    control = study("small-text", text, model=model)
    poisoned = study("text-bomb", {"name": "text", "params": {"path": str(path)}}, model=model)
    run_bomb(env, tmp_path, control, poisoned, path.stat().st_size, expect="done")
