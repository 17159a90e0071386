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

The package reads top to bottom:

- ``container``: SequenceData (the arrays of the three splits, checked) and DataError;
- ``splits``: the request, parameter checks, windows, scaling and the chronological,
  random and stratified splits every loader shares;
- ``builtin``: the generated and shipped data sets (sine, adding, sunspots, co2, digits);
- ``files``: the user's numeric files (csv, npz);
- ``text``: labelled text files (CSV / JSONL) as token ids;

and here, load_dataset() dispatching a name to its loader.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable

from rnntune.models.config import BUILTIN_DATASETS, FOLD_DATASETS, KFOLD_DATASETS, TASKS
from rnntune.models.data.builtin import _load_adding, _load_co2, _load_digits, _load_sine, _load_sunspots
from rnntune.models.data.container import DataError, SequenceData
from rnntune.models.data.files import _load_csv, _load_npz
from rnntune.models.data.splits import Params, _check_int, _Request
from rnntune.models.data.text import TEXT_DEFAULTS, _load_text, read_text_rows
from rnntune.models.files import FileLimits

__all__ = [
    "BUILTIN_DATASETS",
    "FOLD_DATASETS",
    "TASKS",
    "TEXT_DEFAULTS",
    "DataError",
    "SequenceData",
    "load_dataset",
    "read_text_rows",
]


def load_dataset(
    name: str,
    params: Params | None = None,
    *,
    window: int | None = None,
    horizon: int = 1,
    target: str | None = None,
    inputs: list[str] | None = None,
    path: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    file_limits: FileLimits | None = None,
    fold: tuple[int, int] | None = None,
) -> SequenceData:
    """Load a built-in data set by name (see BUILTIN_DATASETS); raise DataError when broken.

    params are the data set's own parameters (e.g. {"n_series": 500} for sine); unknown keys
    are an error. window/horizon apply to forecasting data sets, target/inputs to csv and path
    to csv/npz (which also accept {"path": ...} in params). seed drives the split.
    file_limits caps what a user's .npz / .npy may hold; their headers are checked before loading.
    fold = (index, n_folds): one fold of the train + val data instead of the split, with an empty
    test split: forecasting data (FOLD_DATASETS) one of splits.rolling_origin_folds' walk-forward
    folds (time steps; sine: series), the others (KFOLD_DATASETS) a k-fold fold (splits._kfold;
    stratified for classification) whose last fold is the split itself.
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
    _check_fractions(name, val_fraction, test_fraction)
    if fold is not None:
        _check_fold(name, fold)
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
        file_limits=file_limits or FileLimits(),
        fold=fold,
    )
    return _LOADERS[name](dict(params), request)


def _check_fractions(name: str, val_fraction: float, test_fraction: float) -> None:
    """Each a number: val_fraction in (0, 1), test_fraction in [0, 1) (0: no test split)."""
    for fraction_name, value, low_ok in (
        ("val_fraction", val_fraction, False),
        ("test_fraction", test_fraction, True),
    ):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise DataError(f"{name}: {fraction_name} must be a number, but got {value!r}.")
        if not (0.0 <= value < 1.0 if low_ok else 0.0 < value < 1.0):
            bounds = "[0, 1)" if low_ok else "(0, 1)"
            raise DataError(f"{name}: {fraction_name} must be in {bounds}, but got {value!r}.")


def _check_fold(name: str, fold: tuple[int, int]) -> None:
    """A data set with folds, and fold an (index, n_folds) pair; the loader checks the index."""
    if name not in FOLD_DATASETS + KFOLD_DATASETS:
        known = ", ".join(FOLD_DATASETS + KFOLD_DATASETS)
        raise DataError(f"{name}: folds apply to {known}, not to {name!r}.")
    if not isinstance(fold, tuple) or len(fold) != 2:
        raise DataError(f"{name}: fold must be (index, n_folds), but got {fold=}.")
    _check_int(name, "n_folds", fold[1], low=1)


_LOADERS: dict[str, Callable[[Params, _Request], SequenceData]] = {
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
