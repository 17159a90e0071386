from pathlib import Path

import numpy as np
import pytest

from rnntune.models.config import CLASSIFICATION_DATASETS, DATASETS, FILE_DATASETS
from rnntune.models.data import BUILTIN_DATASETS, DataError, SequenceData, load_dataset

SPLITS = ("train", "val", "test")


def _unscale_x(data: SequenceData, x: np.ndarray) -> np.ndarray:
    return x * np.asarray(data.scaler["x_std"]) + np.asarray(data.scaler["x_mean"])


def _unscale_y(data: SequenceData, y: np.ndarray) -> np.ndarray:
    return y * np.asarray(data.scaler["y_std"]) + np.asarray(data.scaler["y_mean"])


def _write_csv(path: Path, columns: dict[str, list]) -> Path:
    names = list(columns)
    lines = [",".join(names)]
    for row in zip(*columns.values(), strict=False):
        lines.append(",".join(str(v) for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def trend_csv(tmp_path: Path) -> Path:
    t = np.arange(200)
    return _write_csv(
        tmp_path / "series.csv",
        {
            "t": t.tolist(),
            "value": (t * 0.5 + np.sin(t / 3)).round(6).tolist(),
            "label": ["a"] * 200,
        },
    )


# --- built-ins -------------------------------------------------------------------------------


def test_builtin_names_and_unknown_name() -> None:
    assert set(BUILTIN_DATASETS) == {"sine", "adding", "sunspots", "co2", "digits", "csv", "npz", "text"}
    with pytest.raises(DataError, match="unknown dataset 'nope'.*sine.*digits"):
        load_dataset("nope")


def test_file_datasets_are_the_ones_that_read_a_path(tmp_path: Path) -> None:
    """FILE_DATASETS (what the spec asks a path or an upload for) is what the loaders do."""
    for name in DATASETS:
        if name in FILE_DATASETS:
            with pytest.raises(DataError, match="a path is required"):
                load_dataset(name)
        else:
            with pytest.raises(DataError, match="path does not apply"):
                load_dataset(name, path=str(tmp_path / "x.csv"))


def test_classification_datasets_are_the_ones_that_can_classify(tmp_path: Path) -> None:
    """CLASSIFICATION_DATASETS (where the spec allows val_accuracy / val_f1): npz with integer
    labels and text classify; every built-in set that needs no file is one task only."""
    assert load_dataset("digits").task == "classification"
    np.savez(tmp_path / "labels.npz", X=np.zeros((40, 3, 2)), y=np.arange(40) % 2)
    assert load_dataset("npz", path=str(tmp_path / "labels.npz")).task == "classification"
    for name in set(DATASETS) - set(FILE_DATASETS) - set(CLASSIFICATION_DATASETS):
        assert load_dataset(name).task == "regression", name


def test_sine_shapes_and_split_by_series() -> None:
    data = load_dataset("sine", {"n_series": 40, "length": 30}, window=20, horizon=2)
    per_series = 30 - 20 - 2 + 1
    assert data.task == "regression"
    assert data.x_train.shape == (28 * per_series, 20, 1)
    assert data.y_train.shape == (28 * per_series, 2)
    assert len(data.x_val) == len(data.x_test) == 6 * per_series
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.float32
    assert (data.input_size, data.output_size) == (1, 2)
    ids = {split: set(data.meta["series"][split]) for split in SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    assert set().union(*ids.values()) == set(range(40))
    # y is the 2 steps that follow each window: the next window starts one step later
    np.testing.assert_allclose(data.y_train[0, 0], data.x_train[1, -1, 0])
    assert data.meta["kind"] == "forecasting"


def test_sine_default_window_and_seeded() -> None:
    a = load_dataset("sine", {"n_series": 10, "length": 30})
    b = load_dataset("sine", {"n_series": 10, "length": 30})
    assert a.x_train.shape[1] == 29  # min(48, length - horizon): one window per series
    # scaled with the train series' statistics only: exactly centred on train, not on val
    train_series = np.concatenate([a.x_train[:, :, 0], a.y_train], axis=1)
    assert train_series.mean() == pytest.approx(0.0, abs=1e-5)
    assert train_series.std() == pytest.approx(1.0, abs=1e-4)
    val_series = np.concatenate([a.x_val[:, :, 0], a.y_val], axis=1)
    assert abs(val_series.mean()) > 1e-3
    np.testing.assert_array_equal(a.x_train, b.x_train)
    c = load_dataset("sine", {"n_series": 10, "length": 30, "seed": 1})
    assert not np.array_equal(a.x_train, c.x_train)


def test_adding_problem() -> None:
    data = load_dataset("adding", {"n_samples": 300, "length": 20})
    assert data.x_train.shape == (210, 20, 2) and data.y_train.shape == (210, 1)
    assert len(data.x_val) == len(data.x_test) == 45
    for split in SPLITS:
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        markers = x[:, :, 1]
        assert np.all(markers.sum(axis=1) == 2)
        assert np.all(markers[:, :10].sum(axis=1) == 1)  # one in each half
        np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * markers).sum(axis=1), rtol=1e-6)
        assert x[:, :, 0].min() >= 0 and x[:, :, 0].max() <= 1
    naive = data.naive_val_loss()
    expected = np.mean((data.y_val - data.y_train.mean()) ** 2)
    assert naive == pytest.approx(expected, rel=1e-6)


def test_sunspots_chronological() -> None:
    data = load_dataset("sunspots", window=12, horizon=3)
    segments = data.meta["segments"]
    assert segments["train"][1] == segments["val"][0] and segments["val"][1] == segments["test"][0]
    assert segments["test"][1] == 309
    n_train = segments["train"][1]
    assert len(data.x_train) == n_train - 12 - 3 + 1
    from statsmodels.datasets import sunspots

    raw = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    # train windows lie inside the train years; a val or test window's inputs are the 12 years
    # before its first target, and its targets lie inside its own segment, to the last year
    for split in SPLITS:
        start, stop = segments[split]
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        first_target = start + 12 if split == "train" else start
        assert len(x) == stop - first_target - 3 + 1
        for i in (0, len(x) - 1):
            t = first_target + i
            np.testing.assert_allclose(_unscale_x(data, x[i])[:, 0], raw[t - 12 : t], atol=1e-3)
            np.testing.assert_allclose(_unscale_y(data, y[i]), raw[t : t + 3], atol=1e-3)
        assert first_target + len(x) - 1 + 2 == stop - 1  # the last target is the segment's last year
    # no year is a target in two splits
    targets = {
        s: {segments[s][0] + i + k for i in range(len(getattr(data, f"y_{s}"))) for k in range(3)} for s in SPLITS
    }
    targets["train"] = {t + 12 for t in targets["train"]}
    assert not targets["train"] & targets["val"] and not targets["val"] & targets["test"]
    # train-only scaling
    assert data.scaler["x_mean"][0] == pytest.approx(raw[:n_train].mean())
    assert data.scaler["x_mean"][0] != pytest.approx(raw.mean())
    assert data.meta["segment_times"]["train"][0] == 1700


def test_co2_interpolated_and_monthly() -> None:
    data = load_dataset("co2")
    assert data.meta["n_missing_interpolated"] > 0
    assert "interpolated" in data.meta["note"]
    assert data.meta["n_time_steps"] == 526
    assert data.x_train.shape[1:] == (24, 1)
    for split in SPLITS:
        assert np.isfinite(getattr(data, f"x_{split}")).all()
    weekly = load_dataset("co2", {"frequency": "weekly"})
    assert weekly.x_train.shape[1] == 52
    assert weekly.meta["n_time_steps"] == 2284


def test_digits_stratified() -> None:
    data = load_dataset("digits")
    assert data.task == "classification" and data.n_classes == 10 == data.output_size
    assert data.x_train.shape[1:] == (8, 8)
    assert data.y_train.dtype == np.int64
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    overall = np.bincount(np.concatenate([data.y_train, data.y_val, data.y_test])) / 1797
    for split in SPLITS:
        y = getattr(data, f"y_{split}")
        np.testing.assert_allclose(np.bincount(y, minlength=10) / len(y), overall, atol=0.01)
    # no image appears in two splits (they are distinct rows of the original set)
    rows = {split: {x.tobytes() for x in getattr(data, f"x_{split}")} for split in SPLITS}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    assert data.naive_val_loss() == pytest.approx(np.log(10), abs=0.01)


# --- csv -------------------------------------------------------------------------------------


def test_csv_chronological_disjoint_targets_and_train_only_scaling(trend_csv: Path) -> None:
    data = load_dataset("csv", path=trend_csv, target="value", inputs=["t", "value"], window=10)
    assert data.meta["inputs"] == ["t", "value"] and data.meta["target_index"] == 1
    targets = {}
    for split in SPLITS:
        t_inputs = _unscale_x(data, getattr(data, f"x_{split}"))[:, :, 0]
        np.testing.assert_allclose(np.diff(t_inputs, axis=1), 1.0, atol=1e-3)
        targets[split] = np.round(t_inputs[:, -1] + 1).astype(int)  # the step each window forecasts
    # targets in chronological, disjoint splits that cover every step after the first window
    assert targets["train"][0] == 10 and targets["train"][-1] == 139
    assert targets["val"][0] == 140 and targets["val"][-1] == 169
    assert targets["test"][0] == 170 and targets["test"][-1] == 199
    # the first val window's inputs are the 10 train steps before it: past, never future
    assert np.allclose(_unscale_x(data, data.x_val[:1])[0, :, 0], np.arange(130, 140), atol=1e-3)
    # fitted on the 140 train steps only (t = 0..139), not on all 200
    assert data.scaler["x_mean"][0] == pytest.approx(69.5)
    # the target's history is an input scaled like y: naive = repeat the last value
    last = data.x_val[:, -1, 1]
    assert data.naive_val_loss() == pytest.approx(np.mean((data.y_val[:, 0] - last) ** 2), rel=1e-5)


def test_csv_defaults_target_only(trend_csv: Path) -> None:
    data = load_dataset("csv", {"path": str(trend_csv)}, target="value", window=5, horizon=4)
    assert data.input_size == 1 and data.output_size == 4
    assert data.meta["inputs"] == ["value"]
    assert abs(data.x_train[:, :, 0].mean()) < 0.2  # centred on the train split


def test_csv_target_added_to_inputs(trend_csv: Path) -> None:
    data = load_dataset("csv", path=trend_csv, target="value", inputs=["t"], window=5)
    assert data.meta["inputs"] == ["t", "value"]


def test_csv_errors(tmp_path: Path, trend_csv: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_dataset("csv", path=tmp_path / "missing.csv", target="value")
    with pytest.raises(DataError, match="target"):
        load_dataset("csv", path=trend_csv)
    with pytest.raises(DataError, match="column 'price' not found"):
        load_dataset("csv", path=trend_csv, target="price")
    with pytest.raises(DataError, match="column 'label' is not numeric"):
        load_dataset("csv", path=trend_csv, target="value", inputs=["label"])
    with pytest.raises(DataError, match="train split has 140.*window \\+ horizon"):
        load_dataset("csv", path=trend_csv, target="value", window=150)
    with pytest.raises(DataError, match="val split has 30 .*fewer than horizon = 31"):
        load_dataset("csv", path=trend_csv, target="value", window=25, horizon=31)
    with pytest.raises(DataError, match="window must be >= 1"):
        load_dataset("csv", path=trend_csv, target="value", window=0)
    with pytest.raises(DataError, match="horizon must be >= 1"):
        load_dataset("csv", path=trend_csv, target="value", horizon=0)
    nan_csv = _write_csv(tmp_path / "nan.csv", {"t": list(range(100)), "value": [1.0, 2.0, "", 4.0, "nan"] * 20})
    with pytest.raises(DataError, match="target column 'value' has 40 missing/NaN"):
        load_dataset("csv", path=nan_csv, target="value", window=2)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset("csv", path=empty, target="value")


# --- npz -------------------------------------------------------------------------------------


def test_npz_classification_stratified(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [100, 60, 40])
    np.savez(tmp_path / "c.npz", X=rng.normal(size=(200, 6, 2)), y=y)
    data = load_dataset("npz", path=tmp_path / "c.npz")
    assert data.task == "classification" and data.n_classes == 3
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 200
    for split in SPLITS:
        counts = np.bincount(getattr(data, f"y_{split}"), minlength=3)
        np.testing.assert_allclose(counts / counts.sum(), [0.5, 0.3, 0.2], atol=0.02)
    rows = {split: {x.tobytes() for x in getattr(data, f"x_{split}")} for split in SPLITS}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"]
    assert data.scaler is None


def test_npz_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", X=rng.normal(size=(100, 4, 3)), y=rng.normal(5, 2, size=100))
    data = load_dataset("npz", {"path": str(tmp_path / "r.npz")})
    assert data.task == "regression" and data.y_train.shape == (70, 1)
    np.savez(tmp_path / "k.npz", X=rng.normal(size=(100, 4, 3)), y=rng.normal(size=(100, 2)))
    scaled = load_dataset("npz", {"path": str(tmp_path / "k.npz"), "scale": True})
    assert scaled.output_size == 2
    np.testing.assert_allclose(scaled.y_train.mean(axis=0), 0.0, atol=1e-5)
    assert set(scaled.scaler) == {"x_mean", "x_std", "y_mean", "y_std"}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((10, 4)), "y": np.zeros(10)}, r"X must be a non-empty \(N, T, F\)"),
        ({"X": np.zeros((10, 4, 2)), "y": np.zeros((10, 2, 2))}, r"y must be \(N,\) or \(N, K\)"),
        ({"X": np.zeros((10, 4, 2)), "y": np.zeros(9)}, "X has 10 samples but y has 9"),
        ({"X": np.full((10, 4, 2), np.nan), "y": np.zeros(10)}, "X has 80 NaN"),
        ({"X": np.zeros((10, 4, 2)), "y": np.array([np.nan] * 10)}, "y has 10 NaN"),
        ({"X": np.zeros((10, 4, 2)), "y": -np.ones(10, dtype=int)}, "labels must be >= 0"),
        ({"features": np.zeros((10, 4, 2))}, "must hold arrays 'X' and 'y'"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset("npz", path=tmp_path / "bad.npz")


def test_npz_missing_and_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_dataset("npz", path=tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", path=tmp_path / "junk.npz")


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "kwargs", "message"),
    [
        ("sine", {"n_series": -5}, {}, "n_series must be >= 3"),
        ("sine", {"length": 10}, {"window": 10}, "window \\+ horizon = 10 \\+ 1 is longer"),
        ("sine", {"noise": -1}, {}, "noise must be"),
        ("sine", {"n_seris": 10}, {}, "unknown params \\['n_seris'\\]"),
        ("adding", {"n_samples": 0}, {}, "n_samples must be >= 3"),
        ("adding", {"length": 1}, {}, "length must be >= 2"),
        ("adding", {}, {"window": 5}, "window does not apply"),
        ("digits", {}, {"target": "x"}, "target does not apply"),
        ("sunspots", {}, {"window": 300}, "train split has"),
        ("sunspots", {}, {"val_fraction": 0.0}, "val_fraction must be in \\(0, 1\\)"),
        ("sunspots", {}, {"val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
        ("co2", {"frequency": "daily"}, {}, "frequency must be"),
    ],
)
def test_broken_params(name: str, params: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(name, params, **kwargs)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)


def test_sequence_data_checks_shapes() -> None:
    x = np.zeros((4, 3, 2))
    with pytest.raises(DataError, match="x_val has 4 rows but y_val has 3"):
        SequenceData("mine", "regression", x, np.zeros((4, 1)), x, np.zeros((3, 1)), x, np.zeros((4, 1)))
    labels = np.array([0, 1, 2, 1])
    data = SequenceData("mine", "classification", x, labels, x, np.zeros(4), x[:0], np.zeros(0))
    assert data.n_classes == 3 and data.y_val.dtype == np.int64
