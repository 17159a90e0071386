"""Rolling-origin (walk-forward) folds of a train + val split (``selection.folds``): the pure
function, and the folds the forecasting loaders cut with it (sunspots chronologically, sine by
series): the last fold is the search's own split, earlier ones end earlier, none reaches the
test split, and each fold's scaler is fitted on its own training block."""

from __future__ import annotations

import numpy as np
import pytest

from rnntune.models.data import DataError, load_dataset
from rnntune.models.data.splits import Fold, rolling_origin_folds


def test_folds_expand_and_end_on_the_split_itself():
    folds = rolling_origin_folds(100, 20, 3)
    assert folds == [Fold(0, (0, 60), (60, 80)), Fold(1, (0, 80), (80, 100)), Fold(2, (0, 100), (100, 120))]
    for f in folds:
        assert f.train[0] == 0 and f.train[1] == f.val[0] and f.val[1] - f.val[0] == 20
    assert rolling_origin_folds(7, 3, 1) == [Fold(0, (0, 7), (7, 10))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((100, 20, 6), "leave the first fold 0 training units of 100, fewer than 1"),
        ((100, 20, 5, 30), "fewer than 30"),
        ((100, 0, 2), "n_val must be >= 1"),
        ((100, 20, 0), "n_folds must be >= 1"),
        ((100.0, 20, 2), "n_train must be an integer"),
    ],
)
def test_folds_that_cannot_be_cut_say_why(args, message):
    *sizes, min_train = (*args, 1) if len(args) == 3 else args
    with pytest.raises(DataError, match=message):
        rolling_origin_folds(*sizes, min_train=min_train)


def test_sunspots_folds_are_walk_forward_with_no_test_split():
    whole = load_dataset("sunspots", window=24)
    n_train, n_val = (whole.meta["segments"][k][1] - whole.meta["segments"][k][0] for k in ("train", "val"))
    folds = [load_dataset("sunspots", window=24, fold=(i, 3)) for i in range(3)]
    for i, data in enumerate(folds):
        stop = n_train - (2 - i) * n_val
        assert data.meta["segments"] == {"train": [0, stop], "val": [stop, stop + n_val], "test": [stop + n_val] * 2}
        assert data.meta["fold"] == {"index": i, "n_folds": 3, "train": [0, stop], "val": [stop, stop + n_val]}
        assert len(data.x_test) == 0 and len(data.x_val) == len(whole.x_val)  # same-length val blocks
        assert len(data.x_train) == stop - 24  # windows wholly inside the fold's train block
    # the last fold is the search's split, scaled alike; an earlier one has its own scaler
    assert np.array_equal(folds[2].x_train, whole.x_train) and np.array_equal(folds[2].x_val, whole.x_val)
    assert folds[2].scaler == whole.scaler and folds[0].scaler != whole.scaler
    series = load_dataset("sunspots", window=24, test_fraction=0.0, val_fraction=0.01)  # nearly the raw series
    raw = series.x_train[:, 0, 0] * series.scaler["x_std"][0] + series.scaler["x_mean"][0]
    stop0 = folds[0].meta["segments"]["train"][1]
    assert folds[0].scaler["x_mean"][0] == pytest.approx(float(np.mean(raw[:stop0])), rel=1e-5)


def test_sine_folds_run_over_the_series_in_split_order():
    params = {"n_series": 20, "length": 30, "seed": 0}
    whole = load_dataset("sine", params, window=12)
    first, last = (load_dataset("sine", params, window=12, fold=(i, 2)) for i in range(2))
    assert last.meta["series"]["train"] == whole.meta["series"]["train"]
    assert last.meta["series"]["val"] == whole.meta["series"]["val"] and last.meta["series"]["test"] == []
    assert np.array_equal(last.x_train, whole.x_train) and np.array_equal(last.x_val, whole.x_val)
    # fold 0: the val block is the last series of the search's train set; no test series anywhere
    test = set(whole.meta["series"]["test"])
    assert set(first.meta["series"]["val"]) < set(whole.meta["series"]["train"])
    assert set(first.meta["series"]["train"]) | set(first.meta["series"]["val"]) == set(whole.meta["series"]["train"])
    assert not test & (set(first.meta["series"]["train"]) | set(first.meta["series"]["val"]))
    assert len(first.meta["series"]["val"]) == len(whole.meta["series"]["val"]) and len(first.x_test) == 0


def test_bad_folds_are_data_errors():
    with pytest.raises(DataError, match=r"digits: fold must be < n_folds=2"):  # k-fold (tests/models/test_kfolds.py)
        load_dataset("digits", fold=(2, 2))
    with pytest.raises(DataError, match=r"fold must be < n_folds=2"):
        load_dataset("sunspots", window=24, fold=(2, 2))
    with pytest.raises(DataError, match="sunspots: folds: 6 folds"):
        load_dataset("sunspots", window=24, fold=(0, 6))
