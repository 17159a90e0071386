"""k-fold folds for the data sets split at random (issue 29): stratified for classification,
the last fold the search's own split, no test split in a fold, the vocabulary and scaler fitted
on the fold's own train block."""

from __future__ import annotations

import numpy as np
import pytest

from rnntune.models.data import DataError, load_dataset


def _rows(data, split: str) -> set[bytes]:
    return {row.tobytes() for row in getattr(data, f"x_{split}")}


def test_digits_folds_are_stratified_partition_train_plus_val_and_end_with_the_split():
    split = load_dataset("digits")
    pool = _rows(split, "train") | _rows(split, "val")
    folds = [load_dataset("digits", fold=(i, 4)) for i in range(4)]
    vals = [_rows(f, "val") for f in folds]
    assert set().union(*vals) == pool and sum(len(v) for v in vals) == len(split.y_train) + len(split.y_val)
    for f in folds:
        assert len(f.x_test) == 0 and not (_rows(f, "train") & _rows(f, "val"))
        assert f.meta["fold"]["kind"] == "stratified k-fold"
        share = np.bincount(f.y_val, minlength=10) / len(f.y_val)
        assert np.abs(share - np.bincount(split.y_train, minlength=10) / len(split.y_train)).max() < 0.02
    assert np.array_equal(folds[-1].x_val, split.x_val) and np.array_equal(folds[-1].x_train, split.x_train)


def test_npz_regression_takes_k_fold_folds_and_fits_its_scaler_on_the_fold(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "r.npz"
    np.savez(path, X=rng.normal(size=(200, 5, 2)), y=rng.normal(size=200))
    a = load_dataset("npz", {"path": str(path), "scale": True}, fold=(0, 3))
    b = load_dataset("npz", {"path": str(path), "scale": True}, fold=(1, 3))
    assert a.meta["fold"]["kind"] == "k-fold" and len(a.x_test) == 0
    assert a.scaler["x_mean"] != b.scaler["x_mean"]


def test_more_folds_than_train_samples_is_a_data_error(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, X=np.zeros((40, 3, 1)), y=np.array([0, 1] * 20))
    with pytest.raises(DataError, match="cannot cut 40 folds"):
        load_dataset("npz", {"path": str(path)}, fold=(0, 40))
