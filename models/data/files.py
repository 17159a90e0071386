"""The user's numeric files: a time-series CSV (forecasting) and an .npz of X and y.

Errors name the column, the row and the reason, never a cell's contents: the file may be one
its user may name but not read (RNNTUNE_DATA_ROOTS)."""

from __future__ import annotations

import csv
import os

import numpy as np

from rnntune.models import files
from rnntune.models.data.container import DataError, Scaler, SequenceData
from rnntune.models.data.splits import (
    Params,
    _check_int,
    _chronological,
    _fit_scaler,
    _from_indices,
    _kfold,
    _kfold_meta,
    _random_split,
    _reject,
    _Request,
    _take_params,
)


def _file_path(params: Params, request: _Request) -> str:
    path = params.get("path")
    if path is not None and request.path is not None and os.fspath(path) != request.path:
        raise DataError(f"{request.name}: path given twice and differently: params {path!r}, path={request.path!r}.")
    path = request.path if path is None else os.fspath(path)
    if path is None:
        raise DataError(f"{request.name}: a path is required (path=... or params['path']).")
    if not os.path.isfile(path):
        raise DataError(f"{request.name}: file not found: {path!r}.")
    return path


def _load_csv(params: Params, request: _Request) -> SequenceData:
    p = _take_params("csv", params, {"path": None, "delimiter": ",", "period": None})
    if p["period"] is not None:
        _check_int("csv", "period", p["period"], low=1)
    path = _file_path(p, request)
    if request.target is None:
        raise DataError(f"csv: target (the column to forecast) is required for {path!r}.")
    target = request.target
    inputs = list(request.inputs) if request.inputs else [target]
    if target not in inputs:  # the target's own history is always an input
        inputs.append(target)
    if len(set(inputs)) != len(inputs):
        raise DataError(f"csv: inputs has duplicate columns: {inputs}.")
    header, body = _read_csv(path, p["delimiter"])
    missing = [column for column in inputs if column not in header]
    if missing:
        raise DataError(f"csv: column {missing[0]!r} not found in {path!r}; columns: {header}.")
    columns = [_numeric_column(body, header.index(column), column, column == target, path) for column in inputs]
    series = np.stack(columns, axis=1)  # (L, F)
    window = request.window if request.window is not None else min(24, max(1, len(series) // 10))
    return _chronological(
        request, series, feature_names=inputs, target_index=inputs.index(target),
        window=window, meta={"source": os.path.basename(path), "period": p["period"]},
    )  # fmt: skip


def _read_csv(path: str, delimiter: str) -> tuple[list[str], list[list[str]]]:
    """The header (stripped) and the data rows of a CSV, blank rows dropped; at least one of each."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=delimiter))
    except UnicodeDecodeError:
        raise DataError(f"csv: {path!r} is not UTF-8 text.") from None
    except OSError as error:
        raise DataError(f"csv: cannot read {path!r}: {error.strerror or type(error).__name__}.") from None
    except csv.Error:
        raise DataError(f"csv: {path!r} cannot be parsed as CSV.") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"csv: {path!r} is empty.")
    if not rows[1:]:
        raise DataError(f"csv: {path!r} has a header but no rows.")
    return [cell.strip() for cell in rows[0]], rows[1:]


def _numeric_column(body: list[list[str]], position: int, column: str, is_target: bool, path: str) -> np.ndarray:
    """(L,) float64 values of one column, every one a finite number; DataError naming the first
    row that is not (rows count from 1, the header's)."""
    values = np.empty(len(body), dtype=np.float64)
    for i, row in enumerate(body):
        cell = row[position].strip() if position < len(row) else ""
        if cell == "" or cell.lower() in ("nan", "na", "null"):
            values[i] = np.nan
            continue
        try:
            values[i] = float(cell)
        except ValueError:
            raise DataError(f"csv: column {column!r} is not numeric: row {i + 2} of {path!r}.") from None
    n_bad = int((~np.isfinite(values)).sum())
    if n_bad:
        first = int(np.flatnonzero(~np.isfinite(values))[0]) + 2
        role = "target column" if is_target else "column"
        raise DataError(
            f"csv: {role} {column!r} has {n_bad} missing/NaN/inf values "
            f"(first at row {first} of {path!r}); fill or drop them first."
        )
    return values


def _load_npz(params: Params, request: _Request) -> SequenceData:
    p = _take_params("npz", params, {"path": None, "scale": False})
    _reject(request, "window", "horizon", "target", "inputs")
    if not isinstance(p["scale"], bool):
        raise DataError(f"npz: scale must be true or false, but got scale={p['scale']!r}.")
    path = _file_path(p, request)
    x, y, lengths = _read_npz(path, request)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        if y.ndim != 1:
            raise DataError(f"npz: integer labels y must be (N,), but got shape {y.shape}.")
        y = y.astype(np.int64)
        if y.min() < 0:
            raise DataError(f"npz: class labels must be >= 0, but y has {int(y.min())}.")
        n_classes = int(y.max()) + 1
        if n_classes < 2:
            raise DataError("npz: classification needs at least 2 classes, but y has 1.")
        splits = _kfold(request, _random_split(request, len(y), labels=y), y)
        task, split_kind = "classification", "stratified"
    elif np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)):
            raise DataError(f"npz: y has {int((~np.isfinite(y)).sum())} NaN/inf values.")
        y = y.reshape(len(y), -1)
        n_classes = None
        splits = _kfold(request, _random_split(request, len(y)))
        task, split_kind = "regression", "random"
    else:
        raise DataError(f"npz: y must be integer labels or floats, but has dtype {y.dtype}.")

    x, y, scaler = _scale_npz(x.astype(np.float64), y, lengths, splits["train"], task, p["scale"])
    return _from_indices(
        request, x, y, splits, task=task, n_classes=n_classes, scaler=scaler,
        meta={"kind": task, "split": split_kind, "source": os.path.basename(path),
              "scaled": bool(p["scale"]), **_kfold_meta(request, y if task == "classification" else None),
              **({"lengths": [int(lengths.min()), int(lengths.max())]} if lengths is not None else {})},
        lengths=lengths,
    )  # fmt: skip


def _read_npz(path: str, request: _Request) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """X (N, T, F), y (N,) or (N, K) and lengths (N,) int64 or None of an .npz, its headers
    checked before any value is loaded; X's padding (steps past a row's length) set to 0."""
    try:
        files.check_npz(path, request.file_limits)  # sizes from the headers, before any value is loaded
    except files.FileCheckError as error:
        raise DataError(f"npz: cannot read {path!r}: {error}.") from None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # a corrupt or non-npz file: zipfile/pickle/OS errors alike
        raise DataError(f"npz: cannot read {path!r} as .npz ({type(error).__name__}).") from None
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
    lengths = arrays.get("lengths")
    if lengths is not None:  # check_npz checked its dtype, shape and range
        lengths = lengths.astype(np.int64)
        x = np.where(np.arange(x.shape[1])[None, :, None] < lengths[:, None, None], x, 0)  # padding: 0
    return x, y, lengths


def _scale_npz(
    x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None, train: np.ndarray, task: str, scale: bool
) -> tuple[np.ndarray, np.ndarray, Scaler | None]:
    """With ``scale``, x (N, T, F) standardised per feature over the train rows' real steps
    (padding stays 0) and, for regression, y per column; the scaler, else None."""
    if not scale:
        return x, y, None
    real = _real_steps(lengths, len(x), x.shape[1])  # (N, T)
    x_mean, x_std = _fit_scaler(x[train][real[train]])  # (M, F): real steps only
    x = np.where(real[:, :, None], (x - x_mean) / x_std, 0)
    scaler = {"x_mean": x_mean.tolist(), "x_std": x_std.tolist()}
    if task == "regression":
        y_mean, y_std = _fit_scaler(y[train])
        y = (y - y_mean) / y_std
        scaler.update(y_mean=y_mean.tolist(), y_std=y_std.tolist())
    return x, y, scaler


def _real_steps(lengths: np.ndarray | None, n: int, steps: int) -> np.ndarray:
    """(N, T) bool: which steps of each sequence are real (not padding); all, without lengths."""
    if lengths is None:
        return np.ones((n, steps), bool)
    return np.arange(steps)[None, :] < lengths[:, None]
