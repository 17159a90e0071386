"""Data sets as numpy arrays, already windowed, split and scaled.

Every loader returns a SequenceData with train/val/test splits:

    x: float32 (N, T, F)
    y: float32 (N, output_size) for regression, int64 (N,) for classification

Forecasting data sets (sine, sunspots, co2, csv) cut a series into windows of `window` input
steps whose target is the next `horizon` values of the target column. Sine is split by series
(the series are independent), the others chronologically into three consecutive segments of
time (meta["segments"]): every target of a split lies inside its own segment, so no time step
is a target in two splits. Train windows lie wholly inside the train segment; a val or test
window takes its inputs from the `window` steps just before its target, which for the first ones
reach back into the segment before -- the past a deployed forecaster would have seen, never the
future. A val segment of n steps therefore gives n - horizon + 1 windows, not n - window -
horizon + 1 (sunspots, window 24: 46 val windows instead of 22). The scaler (mean/std per
feature) is fitted on the train segment only and applied to x and y alike.

Everything is generated or read locally; nothing is downloaded.
"""

from __future__ import annotations

import csv
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TASKS = ("regression", "classification")

BUILTIN_DATASETS: dict[str, str] = {
    "sine": "Noisy sine waves with random frequency, phase and amplitude; forecast the next "
    "`horizon` steps (split by series).",
    "adding": "The adding problem (Hochreiter & Schmidhuber 1997): (T, 2) sequences of values "
    "and a marker channel; regress the sum of the two marked values.",
    "sunspots": "Yearly sunspot activity 1700-2008 (309 points, statsmodels); chronological forecasting.",
    "co2": "Mauna Loa CO2, weekly 1958-2001 (statsmodels), NaNs interpolated, monthly means "
    "by default; chronological forecasting.",
    "digits": "8x8 handwritten digits (scikit-learn) read row by row: 8 steps of 8 features; "
    "10-class classification, stratified split.",
    "csv": "A time-series CSV file (path, target, inputs); chronological forecasting with train-only scaling.",
    "npz": "An .npz file with X (N, T, F) and y: (N,) integer labels (classification) or "
    "(N,) / (N, K) floats (regression).",
    "text": "Labelled text (CSV or JSONL with text and label columns): token ids padded to "
    "(N, T) with lengths, vocabulary built on the train split; stratified split.",
}


class DataError(ValueError):
    """Broken data or data parameters; the message names the data set or field and the reason."""


@dataclass
class SequenceData:
    name: str
    task: str  # "regression" | "classification"
    x_train: np.ndarray = field(repr=False)  # float32 (N, T, F)
    y_train: np.ndarray = field(repr=False)  # float32 (N, output_size) or int64 (N,)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    n_classes: int | None = None
    # {"x_mean": [F], "x_std": [F], "y_mean": [output_size], "y_std": [output_size]},
    # fitted on the train split; x_scaled = (x - x_mean) / x_std, y likewise.
    scaler: dict | None = None
    meta: dict = field(default_factory=dict)
    # Text (load_dataset("text")): x_* are int64 token ids (N, T) padded with 0 and lengths_*
    # int64 (N,) the true lengths (>= 1); each split is padded to its own longest row. ``text``
    # is what a model file needs to predict from raw strings (tokenizer settings, vocabulary,
    # label names, max_length); ``embeddings`` an optional (vocab_size, D) float32 matrix that
    # fit() loads into the model's embedding. None for every numeric data set.
    lengths_train: np.ndarray | None = field(default=None, repr=False)
    lengths_val: np.ndarray | None = field(default=None, repr=False)
    lengths_test: np.ndarray | None = field(default=None, repr=False)
    text: dict | None = field(default=None, repr=False)
    embeddings: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"{self.name}: task must be one of {TASKS}, but got {self.task=}.")
        if self.lengths_train is not None:
            self._check_text()
            return
        y_dtype = np.int64 if self.task == "classification" else np.float32
        for split in ("train", "val", "test"):
            x = np.ascontiguousarray(getattr(self, f"x_{split}"), dtype=np.float32)
            y = np.ascontiguousarray(getattr(self, f"y_{split}"), dtype=y_dtype)
            if x.ndim != 3:
                raise DataError(f"{self.name}: x_{split} must be (N, T, F), but got {x.shape}.")
            if self.task == "regression" and y.ndim != 2:
                raise DataError(f"{self.name}: y_{split} must be (N, K), but got {y.shape}.")
            if self.task == "classification" and y.ndim != 1:
                raise DataError(f"{self.name}: y_{split} must be (N,), but got {y.shape}.")
            if len(x) != len(y):
                raise DataError(f"{self.name}: x_{split} has {len(x)} rows but y_{split} has {len(y)}.")
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", y)
        if len(self.x_train) == 0 or len(self.x_val) == 0:
            raise DataError(f"{self.name}: the train and val splits must not be empty.")
        for split in ("val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[1:] != self.x_train.shape[1:] or y.shape[1:] != self.y_train.shape[1:]:
                raise DataError(f"{self.name}: the {split} split's shapes differ from train's.")
        if self.task == "classification":
            if self.n_classes is None:
                self.n_classes = int(self.y_train.max()) + 1
            for split in ("train", "val", "test"):
                y = getattr(self, f"y_{split}")
                if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
                    raise DataError(f"{self.name}: y_{split} has labels outside [0, {self.n_classes}).")

    def _check_text(self) -> None:
        if self.task != "classification" or self.text is None:
            raise DataError(f"{self.name}: token-id data must be classification with its text info.")
        for split in ("train", "val", "test"):
            x = np.ascontiguousarray(getattr(self, f"x_{split}"), dtype=np.int64)
            y = np.ascontiguousarray(getattr(self, f"y_{split}"), dtype=np.int64)
            lengths = np.ascontiguousarray(getattr(self, f"lengths_{split}"), dtype=np.int64)
            if x.ndim != 2 or y.ndim != 1 or lengths.shape != y.shape or len(x) != len(y):
                raise DataError(
                    f"{self.name}: {split} must be ids (N, T), y (N,) and lengths (N,), but got "
                    f"{x.shape}, {y.shape} and {lengths.shape}."
                )
            if len(x) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
                raise DataError(f"{self.name}: lengths_{split} must be in [1, {x.shape[1]}].")
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", y)
            setattr(self, f"lengths_{split}", lengths)
        if len(self.x_train) == 0 or len(self.x_val) == 0:
            raise DataError(f"{self.name}: the train and val splits must not be empty.")
        self.n_classes = len(self.text["labels"])
        for split in ("train", "val", "test"):
            y = getattr(self, f"y_{split}")
            if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
                raise DataError(f"{self.name}: y_{split} has labels outside [0, {self.n_classes}).")

    @property
    def vocab_size(self) -> int | None:
        return len(self.text["vocab"]["itos"]) if self.text is not None else None

    @property
    def input_size(self) -> int:
        if self.lengths_train is not None:
            return 1  # one token id per step; the model's embedding makes the features
        return int(self.x_train.shape[2])

    @property
    def output_size(self) -> int:
        if self.task == "classification":
            return int(self.n_classes)
        return int(self.y_train.shape[1])

    @property
    def window(self) -> int:
        return int(self.x_train.shape[1])

    def naive_val_loss(self) -> float:
        """The val loss of a model that learned nothing, in the units the model's val_loss uses.

        forecasting: MSE of repeating the last observed target value for every horizon step;
        other regression: MSE of always predicting the train mean;
        classification: cross-entropy of predicting the train class frequencies.
        """
        if self.task == "classification":
            counts = np.bincount(self.y_train, minlength=self.n_classes).astype(np.float64)
            probs = np.clip(counts / counts.sum(), 1e-12, None)
            return float(-np.mean(np.log(probs[self.y_val])))
        y_val = self.y_val.astype(np.float64)
        if self.meta.get("kind") == "forecasting":
            last = self.x_val[:, -1, self.meta["target_index"]].astype(np.float64)  # (N,)
            return float(np.mean((y_val - last[:, None]) ** 2))
        mean = self.y_train.astype(np.float64).mean(axis=0)  # (K,)
        return float(np.mean((y_val - mean) ** 2))


# ---------------------------------------------------------------------------------------------
# load_dataset


@dataclass(frozen=True)
class _Request:
    name: str
    window: int | None
    horizon: int
    target: str | None
    inputs: list[str] | None
    path: str | None
    val_fraction: float
    test_fraction: float
    seed: int


def load_dataset(
    name: str,
    params: dict | None = None,
    *,
    window: int | None = None,
    horizon: int = 1,
    target: str | None = None,
    inputs: list[str] | None = None,
    path: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> SequenceData:
    """Load a built-in data set by name (see BUILTIN_DATASETS); raise DataError when broken.

    params are the data set's own parameters (e.g. {"n_series": 500} for sine); unknown keys
    are an error. window/horizon apply to forecasting data sets, target/inputs to csv and path
    to csv/npz (which also accept {"path": ...} in params). seed drives the split.
    """
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(_LOADERS)}.")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise DataError(f"{name}: params must be a dict, but got {type(params).__name__}.")
    if window is not None:
        _check_int(name, "window", window, low=1)
    _check_int(name, "horizon", horizon, low=1)
    _check_int(name, "seed", seed, low=None)
    for fraction_name, value, low_ok in (
        ("val_fraction", val_fraction, False),
        ("test_fraction", test_fraction, True),
    ):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise DataError(f"{name}: {fraction_name} must be a number, but got {value!r}.")
        if not (0.0 <= value < 1.0 if low_ok else 0.0 < value < 1.0):
            bounds = "[0, 1)" if low_ok else "(0, 1)"
            raise DataError(f"{name}: {fraction_name} must be in {bounds}, but got {value!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"{name}: val_fraction + test_fraction must be < 1, but got {val_fraction=} + {test_fraction=}."
        )
    if inputs is not None and (isinstance(inputs, str) or not all(isinstance(c, str) for c in inputs)):
        raise DataError(f"{name}: inputs must be a list of column names, but got {inputs!r}.")
    request = _Request(
        name=name,
        window=window,
        horizon=horizon,
        target=target,
        inputs=list(inputs) if inputs is not None else None,
        path=os.fspath(path) if path is not None else None,
        val_fraction=float(val_fraction),
        test_fraction=float(test_fraction),
        seed=int(seed),
    )
    return _LOADERS[name](dict(params), request)


# ---------------------------------------------------------------------------------------------
# helpers


def _check_int(name: str, key: str, value: Any, low: int | None) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise DataError(f"{name}: {key} must be an integer, but got {key}={value!r}.")
    if low is not None and value < low:
        raise DataError(f"{name}: {key} must be >= {low}, but got {key}={value!r}.")


def _take_params(name: str, params: dict, defaults: dict) -> dict:
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise DataError(f"{name}: unknown params {unknown}; known params: {known}.")
    return {**defaults, **params}


def _reject(request: _Request, *keys: str) -> None:
    """Raise for arguments that mean nothing to this data set (a typo would pass silently)."""
    for key in keys:
        value = getattr(request, key)
        if key == "horizon" and value == 1:
            continue
        if key != "horizon" and value is None:
            continue
        raise DataError(f"{request.name}: {key} does not apply to this dataset, but got {key}={value!r}.")


def _split_sizes(n: int, request: _Request, what: str) -> tuple[int, int, int]:
    n_val = int(round(n * request.val_fraction))
    n_test = int(round(n * request.test_fraction))
    n_train = n - n_val - n_test
    if n_train < 1 or n_val < 1 or (request.test_fraction > 0 and n_test < 1):
        raise DataError(
            f"{request.name}: {n} {what} are too few to split into train/val/test with "
            f"val_fraction={request.val_fraction} and test_fraction={request.test_fraction}."
        )
    return n_train, n_val, n_test


def _fit_scaler(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over every axis but the last (a constant feature gets std 1)."""
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std[~(std > 1e-12)] = 1.0
    return mean, std


def _make_windows(values: np.ndarray, window: int, horizon: int, target_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut (..., L, F) into every window: x (..., n, window, F), y (..., n, horizon)."""
    length = values.shape[-2]
    n = length - window - horizon + 1
    starts = np.arange(n)
    x_index = starts[:, None] + np.arange(window)[None, :]  # (n, window)
    y_index = starts[:, None] + window + np.arange(horizon)[None, :]  # (n, horizon)
    x = values[..., x_index, :]  # (..., n, window, F)
    y = values[..., y_index, target_index]  # (..., n, horizon)
    return x, y


def _chronological(
    request: _Request,
    series: np.ndarray,
    *,
    feature_names: list[str],
    target_index: int,
    window: int,
    meta: dict,
) -> SequenceData:
    """Forecasting on one series (L, F): chronological splits, train-only scaling, windows."""
    horizon = request.horizon
    length = len(series)
    n_train, n_val, n_test = _split_sizes(length, request, "time steps")
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, length),
    }
    # train windows lie wholly inside the train segment; val and test windows need only their
    # targets inside theirs (their inputs are the steps just before, reaching back if need be)
    needs = {"train": window + horizon, "val": horizon, "test": horizon}
    for split, (start, stop) in bounds.items():
        if split == "test" and request.test_fraction == 0:
            continue
        if stop - start < needs[split]:
            what = (
                f"window + horizon = {window} + {horizon} = {needs[split]}"
                if split == "train"
                else f"horizon = {horizon} (its windows' targets must lie inside it)"
            )
            raise DataError(
                f"{request.name}: the {split} split has {stop - start} of the series' {length} "
                f"time steps, fewer than {what}; use a smaller window or horizon, other "
                f"fractions, or a longer series."
            )
    mean, std = _fit_scaler(series[:n_train])
    scaled = ((series - mean) / std).astype(np.float32)  # (L, F)
    arrays = {}
    for split, (start, stop) in bounds.items():
        if stop - start < needs[split]:  # an empty test split
            arrays[split] = (
                np.zeros((0, window, series.shape[1]), np.float32),
                np.zeros((0, horizon), np.float32),
            )
            continue
        context = 0 if split == "train" else window  # start - window >= 0: train holds >= window
        arrays[split] = _make_windows(scaled[start - context : stop], window, horizon, target_index)
    scaler = {
        "x_mean": mean.tolist(),
        "x_std": std.tolist(),
        "y_mean": [float(mean[target_index])] * horizon,
        "y_std": [float(std[target_index])] * horizon,
    }
    meta = {
        "kind": "forecasting",
        "split": "chronological",
        "window": window,
        "horizon": horizon,
        "inputs": feature_names,
        "target": feature_names[target_index],
        "target_index": target_index,
        "n_time_steps": length,
        # [start, stop) time steps of each split: its windows' targets lie inside (train's
        # inputs too; val's and test's inputs are the `window` steps before each target)
        "segments": {split: list(bound) for split, bound in bounds.items()},
        **meta,
    }
    return SequenceData(
        name=request.name,
        task="regression",
        x_train=arrays["train"][0],
        y_train=arrays["train"][1],
        x_val=arrays["val"][0],
        y_val=arrays["val"][1],
        x_test=arrays["test"][0],
        y_test=arrays["test"][1],
        scaler=scaler,
        meta=meta,
    )


def _random_split(request: _Request, n: int, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Indices of a random split, stratified by labels when given (numpy only)."""
    rng = np.random.default_rng(request.seed)
    if labels is None:
        n_train, n_val, _ = _split_sizes(n, request, "samples")
        order = rng.permutation(n)
        return {
            "train": np.sort(order[:n_train]),
            "val": np.sort(order[n_train : n_train + n_val]),
            "test": np.sort(order[n_train + n_val :]),
        }
    _split_sizes(n, request, "samples")
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(members) * request.val_fraction))
        n_test = int(round(len(members) * request.test_fraction))
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def _from_indices(
    request: _Request,
    x: np.ndarray,
    y: np.ndarray,
    splits: dict[str, np.ndarray],
    *,
    task: str,
    n_classes: int | None = None,
    scaler: dict | None = None,
    meta: dict,
) -> SequenceData:
    return SequenceData(
        name=request.name,
        task=task,
        x_train=x[splits["train"]],
        y_train=y[splits["train"]],
        x_val=x[splits["val"]],
        y_val=y[splits["val"]],
        x_test=x[splits["test"]],
        y_test=y[splits["test"]],
        n_classes=n_classes,
        scaler=scaler,
        meta=meta,
    )


# ---------------------------------------------------------------------------------------------
# built-in data sets


def _load_sine(params: dict, request: _Request) -> SequenceData:
    p = _take_params("sine", params, {"n_series": 500, "length": 60, "noise": 0.05, "seed": request.seed})
    _reject(request, "target", "inputs", "path")
    _check_int("sine", "n_series", p["n_series"], low=3)
    _check_int("sine", "length", p["length"], low=2)
    _check_int("sine", "seed", p["seed"], low=None)
    noise = p["noise"]
    if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or not noise >= 0:
        raise DataError(f"sine: noise must be a number >= 0, but got noise={noise!r}.")
    n_series, length, horizon = p["n_series"], p["length"], request.horizon
    if length - horizon < 1:
        raise DataError(f"sine: length must exceed horizon, but got length={length} and horizon={horizon}.")
    window = request.window if request.window is not None else min(48, length - horizon)
    if window + horizon > length:
        raise DataError(f"sine: window + horizon = {window} + {horizon} is longer than the series (length={length}).")

    rng = np.random.default_rng(p["seed"])
    amplitude = rng.uniform(0.5, 1.5, size=(n_series, 1))
    period = rng.uniform(8.0, 32.0, size=(n_series, 1))  # time steps per cycle
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_series, 1))
    t = np.arange(length)[None, :]  # (1, L)
    series = amplitude * np.sin(2 * np.pi * t / period + phase)  # (S, L)
    series = series + noise * rng.standard_normal(series.shape)

    # split by series: the series are independent, so no window can leak into another split
    order = np.random.default_rng(request.seed).permutation(n_series)
    n_train, n_val, _ = _split_sizes(n_series, request, "series")
    ids = {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }
    mean, std = _fit_scaler(series[ids["train"]][..., None])
    scaled = ((series[..., None] - mean) / std).astype(np.float32)  # (S, L, 1)
    arrays = {}
    for split, series_ids in ids.items():
        x, y = _make_windows(scaled[series_ids], window, horizon, 0)  # (s, n, W, 1), (s, n, h)
        arrays[split] = (x.reshape(-1, window, 1), y.reshape(-1, horizon))
    return SequenceData(
        name="sine",
        task="regression",
        x_train=arrays["train"][0],
        y_train=arrays["train"][1],
        x_val=arrays["val"][0],
        y_val=arrays["val"][1],
        x_test=arrays["test"][0],
        y_test=arrays["test"][1],
        scaler={
            "x_mean": mean.tolist(),
            "x_std": std.tolist(),
            "y_mean": [float(mean[0])] * horizon,
            "y_std": [float(std[0])] * horizon,
        },
        meta={
            "kind": "forecasting",
            "split": "by_series",
            "window": window,
            "horizon": horizon,
            "inputs": ["value"],
            "target": "value",
            "target_index": 0,
            "windows_per_series": length - window - horizon + 1,
            "series": {split: series_ids.tolist() for split, series_ids in ids.items()},
            **p,
        },
    )


def _load_adding(params: dict, request: _Request) -> SequenceData:
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
    splits = _random_split(request, n)
    return _from_indices(
        request, x, y, splits, task="regression",
        meta={"kind": "regression", "split": "random", "inputs": ["value", "marker"], **p},
    )  # fmt: skip


def _load_sunspots(params: dict, request: _Request) -> SequenceData:
    _take_params("sunspots", params, {})
    _reject(request, "target", "inputs", "path")
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    series = frame["SUNACTIVITY"].to_numpy(dtype=np.float64)[:, None]  # (309, 1)
    years = frame["YEAR"].to_numpy().astype(int)
    window = request.window if request.window is not None else 24
    data = _chronological(
        request, series, feature_names=["SUNACTIVITY"], target_index=0, window=window,
        meta={"source": "statsmodels.datasets.sunspots", "frequency": "yearly"},
    )  # fmt: skip
    data.meta["segment_times"] = {
        split: [int(years[start]), int(years[stop - 1])] if stop > start else []
        for split, (start, stop) in data.meta["segments"].items()
    }
    return data


def _load_co2(params: dict, request: _Request) -> SequenceData:
    p = _take_params("co2", params, {"frequency": "monthly"})
    _reject(request, "target", "inputs", "path")
    if p["frequency"] not in ("monthly", "weekly"):
        raise DataError(f"co2: frequency must be 'monthly' or 'weekly', but got {p['frequency']!r}.")
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


def _load_digits(params: dict, request: _Request) -> SequenceData:
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
    splits = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    return _from_indices(
        request, x, y, splits, task="classification", n_classes=10,
        meta={"kind": "classification", "split": "stratified",
              "source": "sklearn.datasets.load_digits"},
    )  # fmt: skip


def _file_path(params: dict, request: _Request) -> str:
    path = params.get("path")
    if path is not None and request.path is not None and os.fspath(path) != request.path:
        raise DataError(f"{request.name}: path given twice and differently: params {path!r}, path={request.path!r}.")
    path = request.path if path is None else os.fspath(path)
    if path is None:
        raise DataError(f"{request.name}: a path is required (path=... or params['path']).")
    if not os.path.isfile(path):
        raise DataError(f"{request.name}: file not found: {path!r}.")
    return path


def _load_csv(params: dict, request: _Request) -> SequenceData:
    p = _take_params("csv", params, {"path": None, "delimiter": ","})
    path = _file_path(p, request)
    if request.target is None:
        raise DataError(f"csv: target (the column to forecast) is required for {path!r}.")
    target = request.target
    inputs = list(request.inputs) if request.inputs else [target]
    if target not in inputs:  # the target's own history is always an input
        inputs.append(target)
    if len(set(inputs)) != len(inputs):
        raise DataError(f"csv: inputs has duplicate columns: {inputs}.")

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=p["delimiter"]))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"csv: cannot read {path!r}: {error}.") from error
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"csv: {path!r} is empty.")
    header = [cell.strip() for cell in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"csv: {path!r} has a header but no rows.")
    missing = [column for column in inputs if column not in header]
    if missing:
        raise DataError(f"csv: column {missing[0]!r} not found in {path!r}; columns: {header}.")
    columns = []
    for column in inputs:
        position = header.index(column)
        values = np.empty(len(body), dtype=np.float64)
        for i, row in enumerate(body):
            cell = row[position].strip() if position < len(row) else ""
            if cell == "" or cell.lower() in ("nan", "na", "null"):
                values[i] = np.nan
                continue
            try:
                values[i] = float(cell)
            except ValueError:
                raise DataError(
                    f"csv: column {column!r} is not numeric: row {i + 2} of {path!r} holds {cell!r}."
                ) from None
        n_bad = int((~np.isfinite(values)).sum())
        if n_bad:
            first = int(np.flatnonzero(~np.isfinite(values))[0]) + 2
            role = "target column" if column == target else "column"
            raise DataError(
                f"csv: {role} {column!r} has {n_bad} missing/NaN/inf values "
                f"(first at row {first} of {path!r}); fill or drop them first."
            )
        columns.append(values)
    series = np.stack(columns, axis=1)  # (L, F)
    window = request.window if request.window is not None else min(24, max(1, len(series) // 10))
    return _chronological(
        request, series, feature_names=inputs, target_index=inputs.index(target),
        window=window, meta={"source": os.path.basename(path)},
    )  # fmt: skip


def _load_npz(params: dict, request: _Request) -> SequenceData:
    p = _take_params("npz", params, {"path": None, "scale": False})
    _reject(request, "window", "horizon", "target", "inputs")
    if not isinstance(p["scale"], bool):
        raise DataError(f"npz: scale must be true or false, but got scale={p['scale']!r}.")
    path = _file_path(p, request)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # a corrupt or non-npz file: zipfile/pickle/OS errors alike
        raise DataError(f"npz: cannot read {path!r} as .npz: {error}.") from error
    x = arrays.get("X", arrays.get("x"))
    y = arrays.get("y", arrays.get("Y"))
    if x is None or y is None:
        raise DataError(f"npz: {path!r} must hold arrays 'X' and 'y', but has {sorted(arrays)}.")
    if x.ndim != 3 or 0 in x.shape:
        raise DataError(f"npz: X must be a non-empty (N, T, F) array, but got shape {x.shape}.")
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise DataError(f"npz: y must be (N,) or (N, K), but got shape {y.shape}.")
    if len(x) != len(y):
        raise DataError(f"npz: X has {len(x)} samples but y has {len(y)}.")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"npz: X must be numeric, but has dtype {x.dtype}.")
    if not np.all(np.isfinite(x)):
        raise DataError(f"npz: X has {int((~np.isfinite(x)).sum())} NaN/inf values.")

    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        if y.ndim != 1:
            raise DataError(f"npz: integer labels y must be (N,), but got shape {y.shape}.")
        y = y.astype(np.int64)
        if y.min() < 0:
            raise DataError(f"npz: class labels must be >= 0, but y has {int(y.min())}.")
        n_classes = int(y.max()) + 1
        if n_classes < 2:
            raise DataError("npz: classification needs at least 2 classes, but y has 1.")
        splits = _random_split(request, len(y), labels=y)
        task, split_kind = "classification", "stratified"
    elif np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)):
            raise DataError(f"npz: y has {int((~np.isfinite(y)).sum())} NaN/inf values.")
        y = y.reshape(len(y), -1)
        n_classes = None
        splits = _random_split(request, len(y))
        task, split_kind = "regression", "random"
    else:
        raise DataError(f"npz: y must be integer labels or floats, but has dtype {y.dtype}.")

    scaler = None
    x = x.astype(np.float64)
    if p["scale"]:
        x_mean, x_std = _fit_scaler(x[splits["train"]])
        x = (x - x_mean) / x_std
        scaler = {"x_mean": x_mean.tolist(), "x_std": x_std.tolist()}
        if task == "regression":
            y_mean, y_std = _fit_scaler(y[splits["train"]])
            y = (y - y_mean) / y_std
            scaler.update(y_mean=y_mean.tolist(), y_std=y_std.tolist())
    return _from_indices(
        request, x, y, splits, task=task, n_classes=n_classes, scaler=scaler,
        meta={"kind": task, "split": split_kind, "source": os.path.basename(path),
              "scaled": bool(p["scale"])},
    )  # fmt: skip


TEXT_DEFAULTS = {
    "path": None,
    "format": None,  # "csv" | "jsonl"; None: by extension (.jsonl/.json/.ndjson), else by content
    "text_column": "text",
    "label_column": "label",
    "delimiter": ",",
    "lowercase": True,
    "min_freq": 1,
    "max_size": None,
    "max_length": None,
    "embeddings": None,  # a .npy (V', D) matrix ...
    "embeddings_vocab": None,  # ... and a UTF-8 text file of its V' tokens, one per line
}


def read_text_rows(
    content: bytes,
    *,
    fmt: str | None,
    text_column: str,
    label_column: str,
    delimiter: str = ",",
    where: str = "text",
) -> tuple[list[str], list[str]]:
    """(texts, labels as strings) of a CSV / JSONL file's bytes; DataError naming the problem."""
    import json

    try:
        body = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where} is not UTF-8 text: byte {content[exc.start : exc.start + 1]!r} at offset "
            f"{exc.start} (line {line}); save the file as UTF-8."
        ) from None
    body = body.removeprefix("\ufeff")
    if fmt is None:
        fmt = "jsonl" if body.lstrip().startswith("{") else "csv"
    if fmt not in ("csv", "jsonl"):
        raise DataError(f"{where}: format must be 'csv' or 'jsonl', but got {fmt!r}.")
    texts: list[str] = []
    labels: list[str] = []
    if fmt == "jsonl":
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: line {number} is not JSON: {exc.msg}.") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: line {number} is not a JSON object.")
            for column in (text_column, label_column):
                if column not in record:
                    raise DataError(f"{where}: line {number} has no {column!r} field; fields: {sorted(record)}.")
            text, label = record[text_column], record[label_column]
            if not isinstance(text, str):
                raise DataError(f"{where}: line {number}: {text_column!r} must be a string.")
            if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
                raise DataError(
                    f"{where}: line {number}: {label_column!r} must be a non-empty string or an "
                    f"integer, but got {label!r}."
                )
            texts.append(text)
            labels.append(str(label))
    else:
        import io

        try:
            rows = list(csv.reader(io.StringIO(body, newline=""), delimiter=delimiter))
        except csv.Error as exc:
            raise DataError(f"{where}: the CSV cannot be parsed: {exc}.") from None
        rows = [row for row in rows if any(cell.strip() for cell in row)]
        if not rows:
            raise DataError(f"{where}: the file is empty.")
        header = [cell.strip() for cell in rows[0]]
        for column in (text_column, label_column):
            if column not in header:
                raise DataError(f"{where}: column {column!r} not found; columns: {header}.")
        ti, li = header.index(text_column), header.index(label_column)
        for number, row in enumerate(rows[1:], start=2):
            label = row[li].strip() if li < len(row) else ""
            if not label:
                raise DataError(f"{where}: row {number} has an empty {label_column!r}.")
            texts.append(row[ti] if ti < len(row) else "")
            labels.append(label)
    if not texts:
        raise DataError(f"{where}: the file has no examples.")
    return texts, labels


def _label_names(labels: list[str]) -> list[str]:
    """Distinct labels: numerically sorted when all are integers, else alphabetically."""
    names = set(labels)
    if all(re.fullmatch(r"-?\d+", name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _load_text(params: dict, request: _Request) -> SequenceData:
    from rnntune.models.text import TOKEN_PATTERN, Vocab, embedding_matrix, encode_texts, tokenize

    p = _take_params("text", params, TEXT_DEFAULTS)
    _reject(request, "window", "horizon", "target", "inputs")
    path = _file_path(p, request)
    for key in ("text_column", "label_column"):
        if not isinstance(p[key], str) or not p[key]:
            raise DataError(f"text: {key} must be a column name, but got {p[key]!r}.")
    if not isinstance(p["lowercase"], bool):
        raise DataError(f"text: lowercase must be true or false, but got {p['lowercase']!r}.")
    _check_int("text", "min_freq", p["min_freq"], low=1)
    for key in ("max_size", "max_length"):
        if p[key] is not None:
            _check_int("text", key, p[key], low=1)
    fmt = p["format"]
    if fmt is None:
        extension = os.path.splitext(path)[1].lower()
        fmt = (
            "jsonl" if extension in (".jsonl", ".json", ".ndjson") else "csv" if extension in (".csv", ".tsv") else None
        )
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        raise DataError(f"text: cannot read {path!r}: {error}.") from error
    texts, label_values = read_text_rows(
        content, fmt=fmt, text_column=p["text_column"], label_column=p["label_column"],
        delimiter=p["delimiter"], where=f"text: {os.path.basename(path)}",
    )  # fmt: skip
    names = _label_names(label_values)
    if len(names) < 2:
        raise DataError(f"text: classification needs at least 2 labels, but found {names}.")
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[label] for label in label_values], dtype=np.int64)
    tokens = [tokenize(text, lowercase=p["lowercase"]) for text in texts]
    splits = _random_split(request, len(y), labels=y)
    vocab = Vocab.build((tokens[i] for i in splits["train"]), min_freq=p["min_freq"], max_size=p["max_size"])
    arrays = {}
    for split, rows in splits.items():
        arrays[split] = encode_texts([tokens[i] for i in rows], vocab, p["max_length"])
    embeddings, coverage = None, None
    if p["embeddings"] is not None:
        if p["embeddings_vocab"] is None:
            raise DataError("text: embeddings needs embeddings_vocab (its tokens, one per line).")
        try:
            vectors = np.load(p["embeddings"], allow_pickle=False)
            with open(p["embeddings_vocab"], encoding="utf-8") as handle:
                vectors_vocab = [line.rstrip("\n") for line in handle]
            if vectors_vocab and vectors_vocab[-1] == "" and len(vectors_vocab) == len(vectors) + 1:
                vectors_vocab.pop()
            embeddings, coverage = embedding_matrix(vocab, vectors.astype(np.float32), vectors_vocab, request.seed)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise DataError(f"text: cannot use the embeddings {p['embeddings']!r}: {error}.") from error
    n_tokens = np.array([len(t) for t in tokens])
    text_info = {
        "tokenizer": {"pattern": TOKEN_PATTERN, "lowercase": p["lowercase"]},
        "vocab": vocab.to_dict(),
        "labels": names,
        "max_length": p["max_length"],
        "text_column": p["text_column"],
        "label_column": p["label_column"],
    }
    known = [len(set(tokens[i]) & set(vocab.stoi)) / max(1, len(set(tokens[i]))) for i in splits["val"]]
    return SequenceData(
        name="text",
        task="classification",
        x_train=arrays["train"][0], y_train=y[splits["train"]], lengths_train=arrays["train"][1],
        x_val=arrays["val"][0], y_val=y[splits["val"]], lengths_val=arrays["val"][1],
        x_test=arrays["test"][0], y_test=y[splits["test"]], lengths_test=arrays["test"][1],
        n_classes=len(names),
        text=text_info,
        embeddings=embeddings,
        meta={
            "kind": "text_classification",
            "split": "stratified",
            "source": os.path.basename(path),
            "format": fmt,
            "labels": names,
            "vocab_size": len(vocab),
            "max_length": p["max_length"],
            "n_examples": len(y),
            "tokens_per_example": {"median": float(np.median(n_tokens)), "max": int(n_tokens.max())},
            "truncated": int((n_tokens > p["max_length"]).sum()) if p["max_length"] else 0,
            "val_known_token_fraction": round(float(np.mean(known)), 4) if known else None,
            "embeddings_coverage": round(coverage, 4) if coverage is not None else None,
        },
    )  # fmt: skip


_LOADERS: dict[str, Callable[[dict, _Request], SequenceData]] = {
    "sine": _load_sine,
    "adding": _load_adding,
    "sunspots": _load_sunspots,
    "co2": _load_co2,
    "digits": _load_digits,
    "csv": _load_csv,
    "npz": _load_npz,
    "text": _load_text,
}
assert set(_LOADERS) == set(BUILTIN_DATASETS)
