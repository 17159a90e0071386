"""``noisy-sines``: a data-set plugin. rnntune calls it with the spec's ``data.params`` and
trains on the :class:`rnntune.models.SequenceData` it returns (already windowed and split).

Each series is a sine of random frequency and phase plus noise; the task is to forecast the
next value from the last ``window`` ones."""

from __future__ import annotations

import numpy as np

from rnntune.models import SequenceData


def noisy_sines(params: dict) -> SequenceData:
    n_series = int(params.get("n_series", 400))
    window = int(params.get("window", 24))
    noise = float(params.get("noise", 0.1))
    rng = np.random.default_rng(int(params.get("seed", 0)))
    t = np.arange(window + 1)
    freq = rng.uniform(0.05, 0.3, size=(n_series, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_series, 1))
    series = np.sin(freq * t + phase) + noise * rng.standard_normal((n_series, window + 1))
    x = series[:, :window, None].astype(np.float32)  # (N, T, 1)
    y = series[:, window:].astype(np.float32)  # (N, 1): the next value
    n_train, n_val = int(0.7 * n_series), int(0.15 * n_series)
    return SequenceData(
        name="noisy-sines",
        task="regression",
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_val=x[n_train : n_train + n_val],
        y_val=y[n_train : n_train + n_val],
        x_test=x[n_train + n_val :],
        y_test=y[n_train + n_val :],
        meta={"source": "rnntune-example-plugin noisy-sines", "kind": "forecasting", "target_index": 0},
    )
