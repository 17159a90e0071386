"""LSTNet's highway in the forecaster: the RNN's output plus a linear map of the target's last
``highway_window`` steps, rebuilt from the model file."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from rnntune.models.checkpoint import load_model, save_model
from rnntune.models.config import ModelConfig
from rnntune.models.recurrent import SequenceModel


def test_the_output_is_the_rnn_head_plus_a_linear_map_of_the_targets_last_steps():
    torch.manual_seed(0)
    config = ModelConfig(input_size=3, output_size=2, highway=True, highway_window=4, highway_target=1)
    model = SequenceModel(config).eval()
    plain = SequenceModel(dataclasses.replace(config, highway=False)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("highway.")})
    x = torch.randn(5, 9, 3)
    with torch.no_grad():
        expected = plain(x) + x[:, -4:, 1] @ model.highway.weight.T + model.highway.bias
        torch.testing.assert_close(model(x), expected)
        changed = x.clone()
        changed[:, -1, 1] += 1.0  # the target's last value moves the output through the highway too
        assert not torch.allclose(model(changed) - plain(changed), model(x) - plain(x))
    assert model.num_parameters() == plain.num_parameters() + 4 * 2 + 2
    with pytest.raises(ValueError, match="the highway reads the last 4 steps, but the input has 3"):
        model(x[:, :3])


def test_with_lengths_the_highway_reads_each_sequences_own_last_steps():
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(input_size=1, output_size=1, highway=True, highway_window=3)).eval()
    x = torch.randn(2, 6, 1)
    lengths = torch.tensor([4, 2])
    inputs = model._highway_inputs(x, lengths)
    torch.testing.assert_close(inputs[0], x[0, 1:4, 0])
    torch.testing.assert_close(inputs[1], torch.cat([torch.zeros(1), x[1, :2, 0]]))


def test_only_numeric_regression_takes_a_highway():
    for bad in (
        {"task": "classification", "output_size": 3},
        {"vocab_size": 10, "embed_dim": 4, "input_size": 1},
    ):
        with pytest.raises(ValueError, match="highway applies to numeric regression"):
            ModelConfig(**{"input_size": 2, "output_size": 1, "highway": True, **bad})
    with pytest.raises(ValueError, match="highway_target must be a feature index"):
        ModelConfig(input_size=2, output_size=1, highway=True, highway_target=2)
    with pytest.raises(ValueError, match="highway_window must be an integer >= 1"):
        ModelConfig(input_size=2, output_size=1, highway=True, highway_window=0)


def test_the_model_file_rebuilds_the_highway_and_older_files_load_without_one():
    torch.manual_seed(0)
    config = ModelConfig(input_size=1, output_size=3, highway=True, highway_window=5)
    model = SequenceModel(config)
    buffer = io.BytesIO()
    save_model(buffer, config, model.state_dict())
    loaded = load_model(io.BytesIO(buffer.getvalue()), device="cpu")
    assert loaded.config.highway and loaded.config.highway_window == 5
    x = torch.randn(4, 8, 1)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(loaded.predict(x.numpy())), model.eval()(x))

    old = ModelConfig(input_size=1, output_size=3)
    payload_buffer = io.BytesIO()
    save_model(payload_buffer, old, SequenceModel(old).state_dict())
    payload = torch.load(io.BytesIO(payload_buffer.getvalue()), weights_only=True)
    for key in ("highway", "highway_window", "highway_target"):  # a file written before the highway
        del payload["model_config"][key]
    older = io.BytesIO()
    torch.save(payload, older)
    assert load_model(io.BytesIO(older.getvalue()), device="cpu").config.highway is False
