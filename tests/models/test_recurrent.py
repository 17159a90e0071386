import pytest
import torch

from rnntune.models.config import CELLS, TASKS, ModelConfig
from rnntune.models.recurrent import SequenceModel


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_shape(cell: str, task: str, bidirectional: bool) -> None:
    config = ModelConfig(
        input_size=3, output_size=4, task=task, cell=cell, hidden_size=8,
        num_layers=2, bidirectional=bidirectional, dropout=0.1,
    )  # fmt: skip
    model = SequenceModel(config)
    x = torch.randn(5, 7, 3)  # (B, T, F)
    assert model(x).shape == (5, 4)


def test_bidirectional_reads_forward_last_and_backward_first_step() -> None:
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(2, 1, cell="gru", hidden_size=6, bidirectional=True)).eval()
    x = torch.randn(4, 9, 2)
    out, _ = model.rnn(x)  # (B, T, 2H)
    expected = model.head(torch.cat([out[:, -1, :6], out[:, 0, 6:]], dim=1))
    torch.testing.assert_close(model(x), expected)


def test_unidirectional_reads_last_step() -> None:
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(2, 3, cell="lstm", hidden_size=5)).eval()
    x = torch.randn(4, 9, 2)
    out, _ = model.rnn(x)
    torch.testing.assert_close(model(x), model.head(out[:, -1]))


def test_dropout_between_layers_only_when_stacked() -> None:
    single = SequenceModel(ModelConfig(2, 1, num_layers=1, dropout=0.3))
    stacked = SequenceModel(ModelConfig(2, 1, num_layers=2, dropout=0.3))
    assert single.rnn.dropout == 0.0
    assert stacked.rnn.dropout == 0.3
    assert single.drop.p == stacked.drop.p == 0.3


def test_forward_rejects_wrong_feature_count() -> None:
    model = SequenceModel(ModelConfig(3, 1))
    with pytest.raises(ValueError, match=r"\(batch, time, 3\)"):
        model(torch.randn(2, 5, 4))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_size": 0}, "input_size"),
        ({"input_size": 2.0}, "input_size"),
        ({"output_size": 0}, "output_size"),
        ({"task": "ranking"}, "task"),
        ({"task": "classification", "output_size": 1}, "output_size"),
        ({"cell": "transformer"}, "cell"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": True}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"bidirectional": 1}, "bidirectional"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    arguments = {"input_size": 2, "output_size": 2, **kwargs}
    with pytest.raises(ValueError, match=rf"but got {field}="):
        ModelConfig(**arguments)
