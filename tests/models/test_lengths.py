"""Variable-length numeric sequences: an .npz with ``lengths`` beside X (N, T, F) padded is checked,
trained packed (padding never reaches the model), predicted from ragged lists, and its baselines
read zeros beyond each sequence."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from rnntune.models import files
from rnntune.models.baselines import fit_baselines
from rnntune.models.checkpoint import load_model, save_model
from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.models.data import DataError, load_dataset
from rnntune.models.recurrent import SequenceModel
from rnntune.models.train import fit

N, T, F = 150, 12, 3


def ragged_arrays(seed: int = 0, pad: float = 0.0) -> dict[str, np.ndarray]:
    """Class c's sequences carry +c on feature 0 and are 3..T steps long; padding is ``pad``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, T + 1, N)
    y = rng.integers(0, 3, N)
    x = rng.normal(size=(N, T, F))
    for i in range(N):
        x[i, : lengths[i], 0] += 2.0 * y[i]
        x[i, lengths[i] :] = pad
    return {"X": x, "y": y, "lengths": lengths}


def write(tmp_path: Path, name: str = "ragged.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_padding_never_changes_a_sequences_output():
    """Packed: each output reads only its sequence's real steps (LSTM, GRU, bidirectional)."""
    torch.manual_seed(0)
    lengths = torch.tensor([5, 2, 7])
    x = torch.randn(3, 7, F)
    noisy = x.clone()
    for i, n in enumerate(lengths.tolist()):
        noisy[i, n:] = torch.randn(7 - n, F) * 100
    for cell, bidirectional in (("lstm", False), ("gru", True), ("rnn", False)):
        model = SequenceModel(ModelConfig(input_size=F, output_size=2, cell=cell, bidirectional=bidirectional)).eval()
        with torch.no_grad():
            clean, changed = model(x, lengths), model(noisy, lengths)
            alone = model(x[1:2, :2], lengths[1:2])  # the 2-step sequence alone, unpadded
        torch.testing.assert_close(clean, changed)
        torch.testing.assert_close(clean[1:2], alone)
        with torch.no_grad():
            assert not torch.allclose(model(x), model(noisy)), "without lengths the padding is read"


def test_a_padded_npz_with_lengths_trains_packed_and_predicts_ragged_input(tmp_path):
    data = load_dataset("npz", path=str(write(tmp_path, **ragged_arrays(pad=7.0))), params={"scale": True})
    assert data.lengths_train is not None and data.meta["lengths"] == [3, T]
    steps = np.arange(T)[None, :, None]
    assert np.all(data.x_train[steps.repeat(len(data.x_train), 0)[..., 0] >= data.lengths_train[:, None]] == 0)
    other = load_dataset(
        "npz", path=str(write(tmp_path, "other.npz", **ragged_arrays(pad=-50.0))), params={"scale": True}
    )
    np.testing.assert_array_equal(data.x_train, other.x_train)  # the padding's values are gone (and unscaled)

    mc = ModelConfig(input_size=F, output_size=3, task="classification", cell="gru", hidden_size=16)
    result = fit(mc, TrainConfig(max_epochs=15, lr=1e-2, device="cpu"), data)
    assert result.history[-1].val_metrics["accuracy"] > 0.8, result.history[-1]
    buffer = io.BytesIO()
    save_model(buffer, mc, result.state_dict, scaler=data.scaler)
    predictor = load_model(io.BytesIO(buffer.getvalue()), device="cpu")

    raw = ragged_arrays(pad=7.0)
    sequences = [raw["X"][i, : raw["lengths"][i]] for i in range(N)]  # (T_i, F) in original units
    ragged = predictor.predict(sequences)
    assert ragged.shape == (N,) and ragged.dtype == np.int64
    assert np.mean(ragged == raw["y"]) > 0.8
    repadded = [np.concatenate([s, np.full((2, F), 1e3)]) for s in sequences[:1]] + sequences[1:]
    proba = predictor.predict_proba(sequences)
    assert not np.allclose(predictor.predict_proba(repadded)[0], proba[0]), "a longer sequence is another input"
    np.testing.assert_allclose(predictor.predict_proba(sequences[5:6]), proba[5:6], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"x\[1\] must be \(T_i >= 1, 3\)"):
        predictor.predict([sequences[0], np.zeros((4, 2))])


def test_baselines_read_zeros_beyond_each_length():
    """The logistic baseline sees the flattened sequence with its padding zeroed, whatever it held."""
    from rnntune.models.data.container import SequenceData

    raw = ragged_arrays()
    split = {"train": slice(0, 100), "val": slice(100, 125), "test": slice(125, N)}

    def data(pad: float) -> SequenceData:
        x = raw["X"].copy()
        x[np.arange(T)[None, :] >= raw["lengths"][:, None]] = pad
        return SequenceData(
            name="npz", task="classification", n_classes=3,
            **{f"{a}_{s}": v[i] for s, i in split.items() for a, v in (("x", x), ("y", raw["y"]), ("lengths", raw["lengths"]))},
        )  # fmt: skip

    clean, noisy = fit_baselines(data(0.0)), fit_baselines(data(1e3))
    assert clean["logistic"]["test"] == noisy["logistic"]["test"]
    assert clean["logistic"]["test"]["accuracy"] > clean["majority"]["test"]["accuracy"]


BAD_LENGTHS = [
    (np.full(N, T + 1), "lengths must be <= T = 12"),
    (np.r_[np.zeros(1, int), np.full(N - 1, 3)], "lengths must be >= 1"),
    (np.full(N, -2), "lengths must be >= 1"),
    (np.full((N, 1), 3), f"lengths must have shape [{N}]"),
    (np.full(N - 1, 3), f"lengths must have shape [{N}]"),
    (np.full(N, 3.0), "lengths must be a plain integer array, but has dtype float64"),
    (np.full(N, True), "lengths must be a plain integer array, but has dtype bool"),
    (np.array([(3,)] * N, dtype=[("n", "i8")]), "lengths must be a plain integer array"),
]


@pytest.mark.parametrize(("lengths", "reason"), BAD_LENGTHS)
def test_bad_lengths_are_refused_naming_the_field(tmp_path, lengths, reason):
    arrays = {**ragged_arrays(), "lengths": lengths}
    with pytest.raises(files.FileCheckError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        files.check_npz(str(write(tmp_path, **arrays)))
    with pytest.raises(DataError, match="lengths"):  # a spec's path: the worker's loader says the same
        load_dataset("npz", path=str(write(tmp_path, **arrays)))


def test_object_lengths_are_refused_before_loading(tmp_path):
    arrays = {**ragged_arrays(), "lengths": np.array([3] * N, dtype=object)}
    path = tmp_path / "pickled.npz"
    np.savez(path, allow_pickle=True, **arrays)
    with pytest.raises(files.FileCheckError, match="array 'lengths': object arrays"):
        files.check_npz(str(path))
    with pytest.raises(DataError, match="array 'lengths': object arrays"):
        load_dataset("npz", path=str(path))
