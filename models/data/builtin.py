"""The built-in data sets: generated (sine, adding) and shipped by statsmodels / scikit-learn."""

from __future__ import annotations

import numbers

import numpy as np

from rnntune.models.data.container import DataError, SequenceData
from rnntune.models.data.splits import (
    Fold,
    Params,
    _check_int,
    _chronological,
    _fit_scaler,
    _fold,
    _fold_meta,
    _forecasting,
    _from_indices,
    _kfold,
    _kfold_meta,
    _make_windows,
    _random_split,
    _reject,
    _Request,
    _split_sizes,
    _take_params,
)


def _check_period(name: str, p: Params) -> None:
    """``period``: the season length in time steps (the seasonal-naive baseline's), or None."""
    if p["period"] is not None:
        _check_int(name, "period", p["period"], low=1)


def _load_sine(params: Params, request: _Request) -> SequenceData:
    p = _take_params(
        "sine", params, {"n_series": 500, "length": 60, "noise": 0.05, "seed": request.seed, "period": None}
    )
    _reject(request, "target", "inputs", "path")
    _check_period("sine", p)
    _check_int("sine", "n_series", p["n_series"], low=3)
    _check_int("sine", "length", p["length"], low=2)
    _check_int("sine", "seed", p["seed"], low=None)
    noise = p["noise"]
    if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or not float(noise) >= 0:
        raise DataError(f"sine: noise must be a number >= 0, but got noise={noise!r}.")
    n_series, length, horizon = p["n_series"], p["length"], request.horizon
    if length - horizon < 1:
        raise DataError(f"sine: length must exceed horizon, but got length={length} and horizon={horizon}.")
    window = request.window if request.window is not None else min(48, length - horizon)
    if window + horizon > length:
        raise DataError(f"sine: window + horizon = {window} + {horizon} is longer than the series (length={length}).")

    series = _sine_series(n_series, length, float(noise), p["seed"])  # (S, L)
    ids, fold = _series_split(request, n_series)
    mean, std = _fit_scaler(series[ids["train"]][..., None])
    scaled = ((series[..., None] - mean) / std).astype(np.float32)  # (S, L, 1)
    arrays = {}
    for split, series_ids in ids.items():
        x, y = _make_windows(scaled[series_ids], window, horizon, 0)  # (s, n, W, 1), (s, n, h)
        arrays[split] = (x.reshape(-1, window, 1), y.reshape(-1, horizon))
    return _forecasting(
        "sine",
        arrays,
        (mean, std),
        split="by_series",
        window=window,
        horizon=horizon,
        inputs=["value"],
        target_index=0,
        meta={
            "windows_per_series": length - window - horizon + 1,
            "series": {split: series_ids.tolist() for split, series_ids in ids.items()},
            **({"fold": _fold_meta(fold, request)} if fold is not None else {}),
            **p,
        },
    )


def _sine_series(n_series: int, length: int, noise: float, seed: int) -> np.ndarray:
    """(S, L) noisy sines, each of its own amplitude, period and phase (seeded)."""
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.5, 1.5, size=(n_series, 1))
    period = rng.uniform(8.0, 32.0, size=(n_series, 1))  # time steps per cycle
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_series, 1))
    t = np.arange(length)[None, :]  # (1, L)
    series = amplitude * np.sin(2 * np.pi * t / period + phase)  # (S, L)
    return series + noise * rng.standard_normal(series.shape)


def _series_split(request: _Request, n_series: int) -> tuple[dict[str, np.ndarray], Fold | None]:
    """The series of each split, by the request's seed, and the request's fold (None: none).

    Split by series: the series are independent, so no window can leak into another split. The
    folds run over the series in the split's order and leave no test split."""
    order = np.random.default_rng(request.seed).permutation(n_series)
    n_train, n_val, _ = _split_sizes(n_series, request, "series")
    fold = _fold(request, n_train, n_val, min_train=1)
    if fold is not None:
        return {
            "train": np.sort(order[slice(*fold.train)]),
            "val": np.sort(order[slice(*fold.val)]),
            "test": order[:0],
        }, fold
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }, None


def _load_adding(params: Params, request: _Request) -> SequenceData:
    p = _take_params("adding", params, {"n_samples": 3000, "length": 50, "seed": request.seed})
    _reject(request, "window", "horizon", "target", "inputs", "path")
    _check_int("adding", "n_samples", p["n_samples"], low=3)
    _check_int("adding", "length", p["length"], low=2)
    _check_int("adding", "seed", p["seed"], low=None)
    n, length = p["n_samples"], p["length"]
    rng = np.random.default_rng(p["seed"])
    values = rng.uniform(0.0, 1.0, size=(n, length))
    # one marker in the first half, one in the second half (as in Le et al. 2015)
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)  # (N, T, 2)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)  # (N, 1)
    splits = _kfold(request, _random_split(request, n))
    return _from_indices(
        request, x, y, splits, task="regression",
        meta={"kind": "regression", "split": "random", "inputs": ["value", "marker"], **p,
              **_kfold_meta(request, None)},
    )  # fmt: skip


def _load_sunspots(params: Params, request: _Request) -> SequenceData:
    p = _take_params("sunspots", params, {"period": 11})  # the solar cycle: about 11 years
    _reject(request, "target", "inputs", "path")
    _check_period("sunspots", p)
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    series = frame["SUNACTIVITY"].to_numpy(dtype=np.float64)[:, None]  # (309, 1)
    years = frame["YEAR"].to_numpy().astype(int)
    window = request.window if request.window is not None else 24
    data = _chronological(
        request, series, feature_names=["SUNACTIVITY"], target_index=0, window=window,
        meta={"source": "statsmodels.datasets.sunspots", "frequency": "yearly", "period": p["period"]},
    )  # fmt: skip
    data.meta["segment_times"] = {
        split: [int(years[start]), int(years[stop - 1])] if stop > start else []
        for split, (start, stop) in data.meta["segments"].items()
    }
    return data


def _load_co2(params: Params, request: _Request) -> SequenceData:
    p = _take_params("co2", params, {"frequency": "monthly", "period": None})
    _reject(request, "target", "inputs", "path")
    if p["frequency"] not in ("monthly", "weekly"):
        raise DataError(f"co2: frequency must be 'monthly' or 'weekly', but got {p['frequency']!r}.")
    if p["period"] is None:  # a year
        p["period"] = 12 if p["frequency"] == "monthly" else 52
    _check_period("co2", p)
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"]
    n_missing = int(weekly.isna().sum())
    weekly = weekly.interpolate(method="time").bfill().ffill()
    frame = weekly.resample("MS").mean() if p["frequency"] == "monthly" else weekly
    series = frame.to_numpy(dtype=np.float64)[:, None]
    default_window = 24 if p["frequency"] == "monthly" else 52
    window = request.window if request.window is not None else default_window
    data = _chronological(
        request, series, feature_names=["co2"], target_index=0, window=window,
        meta={
            "source": "statsmodels.datasets.co2",
            "frequency": p["frequency"],
            "period": p["period"],
            "n_missing_interpolated": n_missing,
            "note": f"{n_missing} missing weekly values were linearly interpolated in time"
            + (", then averaged to monthly means" if p["frequency"] == "monthly" else ""),
        },
    )  # fmt: skip
    dates = [str(d.date()) for d in frame.index]
    data.meta["segment_times"] = {
        split: [dates[start], dates[stop - 1]] if stop > start else []
        for split, (start, stop) in data.meta["segments"].items()
    }
    return data


def _load_digits(params: Params, request: _Request) -> SequenceData:
    _take_params("digits", params, {})
    _reject(request, "window", "horizon", "target", "inputs", "path")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8): 8 rows as steps of 8 pixels
    y = digits.target.astype(np.int64)
    indices = np.arange(len(y))
    rest, test = train_test_split(
        indices, test_size=request.test_fraction, stratify=y, random_state=request.seed
    ) if request.test_fraction > 0 else (indices, indices[:0])  # fmt: skip
    train, val = train_test_split(
        rest,
        test_size=request.val_fraction / (1.0 - request.test_fraction),
        stratify=y[rest],
        random_state=request.seed,
    )
    splits = _kfold(request, {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}, y)
    return _from_indices(
        request, x, y, splits, task="classification", n_classes=10,
        meta={"kind": "classification", "split": "stratified",
              "source": "sklearn.datasets.load_digits", **_kfold_meta(request, y)},
    )  # fmt: skip
