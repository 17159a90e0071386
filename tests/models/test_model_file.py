import io
from pathlib import Path

import numpy as np
import pytest
import torch

from rnntune.models.checkpoint import load_model, save_model
from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.models.data import load_dataset
from rnntune.models.recurrent import SequenceModel
from rnntune.models.train import fit


def test_forecast_round_trip_in_original_units(tmp_path: Path) -> None:
    data = load_dataset("sunspots", window=12, horizon=2)
    model_config = ModelConfig(input_size=1, output_size=2, cell="gru", hidden_size=8)
    train_config = TrainConfig(max_epochs=2, lr=1e-2)
    result = fit(model_config, train_config, data)
    path = tmp_path / "best.pt"
    meta = {"study": "s", "val_loss": np.float32(result.best_val_loss)}
    save_model(
        path, model_config, result.state_dict,
        train_config=train_config, scaler=data.scaler, meta=meta,
    )  # fmt: skip

    predictor = load_model(path, device="cpu")
    assert predictor.config == model_config
    assert predictor.train_config == train_config
    assert predictor.meta["study"] == "s" and isinstance(predictor.meta["val_loss"], float)

    model = SequenceModel(model_config).eval()
    model.load_state_dict(result.state_dict)
    with torch.no_grad():
        scaled_out = model(torch.from_numpy(data.x_val)).numpy()  # (N, 2), scaled units
    y_std, y_mean = np.asarray(data.scaler["y_std"]), np.asarray(data.scaler["y_mean"])
    x_std, x_mean = np.asarray(data.scaler["x_std"]), np.asarray(data.scaler["x_mean"])
    x_original = data.x_val * x_std + x_mean  # sunspot counts, as a user has them
    predictions = predictor.predict(x_original)
    assert predictions.shape == (len(data.x_val), 2)
    np.testing.assert_allclose(predictions, scaled_out * y_std + y_mean, rtol=1e-4, atol=1e-3)
    assert predictions.mean() > 5  # original units (sunspot counts), not standardised


def test_classifier_round_trip_and_plain_file() -> None:
    data = load_dataset("digits")
    model_config = ModelConfig(input_size=8, output_size=10, task="classification", hidden_size=8)
    result = fit(model_config, TrainConfig(max_epochs=1), data)
    buffer = io.BytesIO()
    save_model(buffer, model_config, result.state_dict)
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert payload["format"] == "rnntune.model" and payload["scaler"] is None

    predictor = load_model(io.BytesIO(buffer.getvalue()))
    model = SequenceModel(model_config).eval()
    model.load_state_dict(result.state_dict)
    with torch.no_grad():
        expected = model(torch.from_numpy(data.x_test)).argmax(dim=1).numpy()
    labels = predictor.predict(data.x_test)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, expected)
    probabilities = predictor.predict_proba(data.x_test[:5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    config = ModelConfig(input_size=2, output_size=1, hidden_size=4)
    state = SequenceModel(config).state_dict()
    with pytest.raises(RuntimeError):  # weights of another shape
        save_model(tmp_path / "m.pt", ModelConfig(2, 1, hidden_size=5), state)
    with pytest.raises(TypeError, match=r"meta\['when'\] holds a object"):
        save_model(tmp_path / "m.pt", config, state, meta={"when": object()})
    assert not any(tmp_path.iterdir())


def test_predict_checks_shape(tmp_path: Path) -> None:
    config = ModelConfig(input_size=2, output_size=1, hidden_size=4)
    save_model(tmp_path / "m.pt", config, SequenceModel(config).state_dict())
    predictor = load_model(tmp_path / "m.pt")
    assert predictor.predict(np.zeros((3, 5, 2))).shape == (3, 1)
    with pytest.raises(ValueError, match=r"x must be \(N, T, 2\)"):
        predictor.predict(np.zeros((3, 5, 3)))


def test_load_rejects_other_files(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an rnntune model file"):
        load_model(tmp_path / "other.pt")
