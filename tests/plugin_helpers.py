"""A throw-away plugin distribution for tests: ``make_plugin_dist(dir)`` writes a module and its
``.dist-info`` (metadata + entry points) into ``dir``; putting ``dir`` on a process's path
(``sys.path`` / ``PYTHONPATH``) installs the plugins there and nowhere else, so one worker can
have them while another has not."""

from __future__ import annotations

from pathlib import Path

DIST, VERSION = "rnntune-test-plugins", "0.1"

MODULE = """
import time

import numpy as np
import torch
from torch import nn

from rnntune.models import SequenceData


class TinyGRU(nn.Module):
    def __init__(self, input_size, output_size, hidden_size):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x, lengths=None):
        out, _ = self.gru(x)  # (B, T, H)
        return self.head(out.mean(dim=1))  # (B, output_size)


def tiny_gru(config):
    return TinyGRU(config["input_size"], config["output_size"], int(config.get("hidden_size", 8)))


def raising_model(config):
    raise RuntimeError("this model plugin is broken")


def wrong_shape(config):
    return nn.Identity()  # (B, T, F) out instead of (B, output_size)


def tiny_sines(params):
    rng = np.random.default_rng(int(params.get("seed", 0)))
    n, window = int(params.get("n", 60)), 8
    t = np.arange(window + 1)
    series = np.sin(rng.uniform(0.1, 0.3, (n, 1)) * t + rng.uniform(0, 6.28, (n, 1)))
    x, y = series[:, :window, None], series[:, window:]
    return SequenceData("tiny-sines", "regression", x[:40], y[:40], x[40:50], y[40:50], x[50:], y[50:])


def sine_arrays(params):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6, 2))
    return {"x": x, "y": x[:, -1, 0], "task": "regression"}


def raising_data(params):
    raise RuntimeError("no data today")


def quad(params, report):
    for step in range(1, 5):
        report(step, params["x"] * 10 + 1.0 / step)
        time.sleep(0.02)
    return params["x"] * 10


def not_a_number(params, report):
    return "high"
"""

ENTRY_POINTS = """
[rnntune.models]
tiny-gru = rnntune_test_plugins:tiny_gru
raising-model = rnntune_test_plugins:raising_model
wrong-shape = rnntune_test_plugins:wrong_shape

[rnntune.datasets]
tiny-sines = rnntune_test_plugins:tiny_sines
sine-arrays = rnntune_test_plugins:sine_arrays
raising-data = rnntune_test_plugins:raising_data

[rnntune.objectives]
quad = rnntune_test_plugins:quad
not-a-number = rnntune_test_plugins:not_a_number
"""


def make_plugin_dist(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rnntune_test_plugins.py").write_text(MODULE)
    info = directory / f"rnntune_test_plugins-{VERSION}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return directory
