"""What every loader shares: the request, parameter checks, windows, scaling and the splits."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnntune.models.data.container import DataError, Scaler, SequenceData
from rnntune.models.files import FileLimits

# A data set's own parameters as given (load_dataset's params, a spec's data.params): JSON values
# that each loader checks by name and type before use.
Params = dict[str, Any]


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
    file_limits: FileLimits = FileLimits()  # what a user's .npz / .npy may hold (checked before loading)
    # (index, n_folds): one of rolling_origin_folds' folds instead of the train/val/test split
    fold: tuple[int, int] | None = None


def _check_int(name: str, key: str, value: Any, low: int | None) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise DataError(f"{name}: {key} must be an integer, but got {key}={value!r}.")
    if low is not None and value < low:
        raise DataError(f"{name}: {key} must be >= {low}, but got {key}={value!r}.")


def _take_params(name: str, params: Params, defaults: Params) -> Params:
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


@dataclass(frozen=True)
class Fold:
    """One rolling-origin fold over the ``n_train + n_val`` units (time steps, or series) that
    precede the test split: ``train`` and ``val`` are [start, stop) ranges of those units."""

    index: int
    train: tuple[int, int]
    val: tuple[int, int]


def rolling_origin_folds(n_train: int, n_val: int, n_folds: int, *, min_train: int = 1) -> list[Fold]:
    """Walk-forward folds over the units of a train + val split, an expanding window.

    Every fold's val block has the split's ``n_val`` units and starts right after its train
    block, which starts at unit 0; each fold ends ``n_val`` units before the next. The last fold
    (``n_folds - 1``) is the split itself (train ``[0, n_train)``, val ``[n_train, n_train +
    n_val)``), so a search trial's own value is that fold's. Raises DataError when the first
    fold's train block would hold fewer than ``min_train`` units."""
    for key, value, low in (("n_train", n_train, 1), ("n_val", n_val, 1), ("n_folds", n_folds, 1)):
        _check_int("folds", key, value, low)
    first = n_train - (n_folds - 1) * n_val
    if first < min_train:
        raise DataError(
            f"folds: {n_folds} folds with val blocks of {n_val} leave the first fold {first} training "
            f"units of {n_train}, fewer than {min_train}; use fewer folds or a longer series."
        )
    folds = []
    for index in range(n_folds):
        stop = n_train - (n_folds - 1 - index) * n_val
        folds.append(Fold(index, (0, stop), (stop, stop + n_val)))
    return folds


def _fold(request: _Request, n_train: int, n_val: int, min_train: int) -> Fold | None:
    """The request's fold of a train + val split of these sizes (None: the split itself)."""
    if request.fold is None:
        return None
    index, n_folds = request.fold
    _check_int(request.name, "fold", index, 0)
    if index >= n_folds:
        raise DataError(f"{request.name}: fold must be < n_folds={n_folds}, but got fold={index}.")
    try:
        return rolling_origin_folds(n_train, n_val, n_folds, min_train=min_train)[index]
    except DataError as exc:
        raise DataError(f"{request.name}: {exc}") from None


def _kfold(request: _Request, splits: dict[str, np.ndarray], labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The request's k-fold fold of a random (``labels``: stratified) split, or the split itself.

    The train + val samples are cut into ``n_folds`` blocks: block ``n_folds - 1`` is the val
    split itself, blocks ``0 .. n_folds - 2`` partition the train split (scikit-learn's
    ``StratifiedKFold`` by label, else ``KFold``; shuffled, seeded by the split's seed). Fold i
    validates on block i and trains on the rest, so the last fold is the search's own split. A
    fold has no test split (the finalize step alone touches it)."""
    if request.fold is None:
        return splits
    index, n_folds = request.fold
    _check_int(request.name, "fold", index, 0)
    if index >= n_folds:
        raise DataError(f"{request.name}: fold must be < n_folds={n_folds}, but got fold={index}.")
    train, val = splits["train"], splits["val"]
    empty = train[:0]
    if index == n_folds - 1:
        return {"train": train, "val": val, "test": empty}
    n_blocks = n_folds - 1
    if n_blocks == 1:
        block = train
    else:
        from sklearn.model_selection import KFold, StratifiedKFold

        splitter = (StratifiedKFold if labels is not None else KFold)(
            n_splits=n_blocks, shuffle=True, random_state=request.seed % 2**32
        )
        try:
            folds = list(splitter.split(train, None if labels is None else labels[train]))
        except ValueError as exc:  # more folds than samples (or than a class's members)
            raise DataError(f"{request.name}: cannot cut {n_folds} folds: {exc}") from None
        block = train[folds[index][1]]
    rest = np.setdiff1d(train, block)
    return {"train": np.sort(np.concatenate([rest, val])), "val": np.sort(block), "test": empty}


def _kfold_meta(request: _Request, labels: np.ndarray | None) -> dict[str, Any]:
    if request.fold is None:
        return {}
    kind = "stratified k-fold" if labels is not None else "k-fold"
    return {"fold": {"index": request.fold[0], "n_folds": request.fold[1], "kind": kind}}


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
    meta: dict[str, Any],
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
    fold = _fold(request, n_train, n_val, min_train=window + horizon)
    if fold is not None:  # an earlier origin; no test split (a fold never reaches it)
        bounds = {"train": fold.train, "val": fold.val, "test": (fold.val[1], fold.val[1])}
    # train windows lie wholly inside the train segment; val and test windows need only their
    # targets inside theirs (their inputs are the steps just before, reaching back if need be)
    needs = {"train": window + horizon, "val": horizon, "test": horizon}
    _check_segments(request, bounds, needs, length, window, test=request.test_fraction != 0 and fold is None)
    mean, std = _fit_scaler(series[: bounds["train"][1]])
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
    return _forecasting(
        request.name,
        arrays,
        (mean, std),
        split="chronological",
        window=window,
        horizon=horizon,
        inputs=feature_names,
        target_index=target_index,
        meta={
            "n_time_steps": length,
            # [start, stop) time steps of each split: its windows' targets lie inside (train's
            # inputs too; val's and test's inputs are the `window` steps before each target)
            "segments": {split: list(bound) for split, bound in bounds.items()},
            **({"fold": _fold_meta(fold, request)} if fold is not None else {}),
            **meta,
        },
    )


def _check_segments(
    request: _Request,
    bounds: dict[str, tuple[int, int]],
    needs: dict[str, int],
    length: int,
    window: int,
    *,
    test: bool,
) -> None:
    """Each split's segment holds at least the time steps it ``needs`` (the test split only
    when there is one: ``test``); DataError naming the split and what it lacks."""
    for split, (start, stop) in bounds.items():
        if split == "test" and not test:
            continue
        if stop - start < needs[split]:
            what = (
                f"window + horizon = {window} + {request.horizon} = {needs[split]}"
                if split == "train"
                else f"horizon = {request.horizon} (its windows' targets must lie inside it)"
            )
            raise DataError(
                f"{request.name}: the {split} split has {stop - start} of the series' {length} "
                f"time steps, fewer than {what}; use a smaller window or horizon, other "
                f"fractions, or a longer series."
            )


def _forecasting(
    name: str,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    scaler: tuple[np.ndarray, np.ndarray],
    *,
    split: str,
    window: int,
    horizon: int,
    inputs: list[str],
    target_index: int,
    meta: dict[str, Any],
) -> SequenceData:
    """A forecasting data set from its windows per split, ``(x, y)``, and the train split's
    per-feature ``(mean, std)``: the target's scaler repeats for each of the ``horizon`` steps.
    ``meta``: what the loader adds (where the splits lie, the source)."""
    mean, std = scaler
    return SequenceData(
        name=name,
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
            "y_mean": [float(mean[target_index])] * horizon,
            "y_std": [float(std[target_index])] * horizon,
        },
        meta={
            "kind": "forecasting",
            "split": split,
            "window": window,
            "horizon": horizon,
            "inputs": inputs,
            "target": inputs[target_index],
            "target_index": target_index,
            **meta,
        },
    )


def _fold_meta(fold: Fold, request: _Request) -> dict[str, Any]:
    assert request.fold is not None
    return {"index": fold.index, "n_folds": request.fold[1], "train": list(fold.train), "val": list(fold.val)}


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
    scaler: Scaler | None = None,
    meta: dict[str, Any],
    lengths: np.ndarray | None = None,
) -> SequenceData:
    """The split's arrays; ``lengths`` (N,): variable-length sequences' real steps."""
    if lengths is not None:
        return SequenceData(
            name=request.name, task=task, n_classes=n_classes, scaler=scaler, meta=meta,
            **{f"{a}_{split}": v[splits[split]] for split in splits for a, v in (("x", x), ("y", y), ("lengths", lengths))},
        )  # fmt: skip
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
