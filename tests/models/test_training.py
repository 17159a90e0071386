import math

import numpy as np
import pytest
import torch

from rnntune.models.config import OPTIMIZERS, SCHEDULERS, ModelConfig, TrainConfig
from rnntune.models.data import SequenceData, load_dataset
from rnntune.models.recurrent import SequenceModel
from rnntune.models.train import (
    DivergedError,
    EpochResult,
    evaluate,
    fit,
    pick_device,
)


@pytest.fixture(scope="module")
def tiny() -> SequenceData:
    return load_dataset("adding", {"n_samples": 200, "length": 8})


TINY_MODEL = ModelConfig(input_size=2, output_size=1, cell="gru", hidden_size=8)


def test_sine_beats_last_value_forecast() -> None:
    data = load_dataset("sine", {"n_series": 150})
    model = ModelConfig(input_size=1, output_size=1, cell="lstm", hidden_size=32)
    result = fit(model, TrainConfig(lr=3e-3, max_epochs=6), data)
    assert result.best_val_loss < 0.5 * data.naive_val_loss()
    assert result.device == "cpu" and len(result.history) == 6
    assert result.stopped == "max_epochs"
    assert result.samples_per_s > 0


def test_adding_loss_falls() -> None:
    data = load_dataset("adding", {"n_samples": 1000, "length": 10})
    model = ModelConfig(input_size=2, output_size=1, cell="gru", hidden_size=16)
    result = fit(model, TrainConfig(lr=1e-2, batch_size=32, max_epochs=8), data)
    losses = [epoch.train_loss for epoch in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_val_loss < 0.5 * data.naive_val_loss()


def test_digits_classification_learns() -> None:
    data = load_dataset("digits")
    model = ModelConfig(input_size=8, output_size=10, task="classification", hidden_size=16)
    result = fit(model, TrainConfig(lr=1e-2, max_epochs=3), data)
    assert result.best_val_loss < data.naive_val_loss()
    assert result.history[-1].val_metrics["accuracy"] > 0.5


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_runs(tiny: SequenceData, optimizer: str) -> None:
    config = TrainConfig(
        optimizer=optimizer,
        lr=1e-2,
        momentum=0.9 if optimizer in ("sgd", "rmsprop") else 0.0,
        nesterov=optimizer == "sgd",
        weight_decay=1e-4,
        max_epochs=2,
        clip_norm=1.0,
    )
    result = fit(TINY_MODEL, config, tiny)
    assert [e.epoch for e in result.history] == [1, 2]
    assert all(math.isfinite(e.train_loss) and math.isfinite(e.val_loss) for e in result.history)
    assert set(result.history[0].val_metrics) == {"mae"}


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_runs(tiny: SequenceData, scheduler: str) -> None:
    config = TrainConfig(scheduler=scheduler, step_size=1, patience=4, max_epochs=2)
    result = fit(TINY_MODEL, config, tiny)
    assert len(result.history) == 2


def test_early_stopping(tiny: SequenceData) -> None:
    # an lr far below float32 resolution leaves the weights, so the val loss, unchanged
    config = TrainConfig(optimizer="sgd", lr=1e-30, patience=2, max_epochs=20)
    result = fit(TINY_MODEL, config, tiny)
    assert result.stopped == "early_stopping"
    assert len(result.history) == 3 and result.best_epoch == 1


def test_callback_sees_every_epoch_and_can_stop(tiny: SequenceData) -> None:
    seen: list[EpochResult] = []

    def on_epoch_end(result: EpochResult) -> bool:
        seen.append(result)
        return result.epoch == 2

    result = fit(TINY_MODEL, TrainConfig(max_epochs=10), tiny, on_epoch_end=on_epoch_end)
    assert result.stopped == "callback"
    assert [e.epoch for e in seen] == [1, 2]
    assert result.history == seen


class Pruned(Exception):
    pass


def test_callback_exception_propagates(tiny: SequenceData) -> None:
    def on_epoch_end(result: EpochResult) -> None:
        if result.epoch == 2:
            raise Pruned(f"pruned at {result.epoch}")

    with pytest.raises(Pruned, match="pruned at 2"):
        fit(TINY_MODEL, TrainConfig(max_epochs=10), tiny, on_epoch_end=on_epoch_end)


def test_huge_lr_diverges(tiny: SequenceData) -> None:
    model = ModelConfig(input_size=2, output_size=1, cell="rnn", hidden_size=8)
    with pytest.raises(DivergedError, match="diverged at epoch"):
        fit(model, TrainConfig(optimizer="sgd", lr=1e4, max_epochs=3), tiny)


def test_nan_in_data_diverges(tiny: SequenceData) -> None:
    y_train = tiny.y_train.copy()
    y_train[3] = np.nan
    broken = SequenceData("broken", "regression", tiny.x_train, y_train, tiny.x_val, tiny.y_val,
                          tiny.x_test, tiny.y_test)  # fmt: skip
    with pytest.raises(DivergedError, match="at epoch 1: train_loss=nan"):
        fit(TINY_MODEL, TrainConfig(max_epochs=3), broken)


def test_same_seed_same_curve(tiny: SequenceData) -> None:
    model = ModelConfig(input_size=2, output_size=1, hidden_size=8, num_layers=2, dropout=0.2)
    config = TrainConfig(max_epochs=3, seed=7)
    first, second = fit(model, config, tiny), fit(model, config, tiny)
    curve = lambda r: [(e.train_loss, e.val_loss, e.val_metrics) for e in r.history]  # noqa: E731
    assert curve(first) == curve(second)
    for key, value in first.state_dict.items():
        assert torch.equal(value, second.state_dict[key])
    other = fit(model, TrainConfig(max_epochs=3, seed=8), tiny)
    assert curve(other) != curve(first)


def test_best_state_dict_is_the_best_epoch(tiny: SequenceData) -> None:
    result = fit(TINY_MODEL, TrainConfig(lr=3e-2, max_epochs=4), tiny)
    assert result.best_val_loss == min(e.val_loss for e in result.history)
    assert result.history[result.best_epoch - 1].val_loss == result.best_val_loss
    assert all(v.device.type == "cpu" for v in result.state_dict.values())
    model = SequenceModel(TINY_MODEL)
    model.load_state_dict(result.state_dict)
    x_val, y_val = torch.from_numpy(tiny.x_val), torch.from_numpy(tiny.y_val)
    metrics = evaluate(model, x_val, y_val, "regression")
    assert metrics["loss"] == pytest.approx(result.best_val_loss, rel=1e-5)


def test_evaluate_classification_and_batching() -> None:
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(3, 4, task="classification", hidden_size=5))
    x, y = torch.randn(50, 6, 3), torch.randint(0, 4, (50,))
    whole = evaluate(model, x, y, "classification", batch_size=1024)
    batched = evaluate(model, x, y, "classification", batch_size=7)
    assert set(whole) == {"loss", "accuracy", "f1"}
    assert whole["loss"] == pytest.approx(batched["loss"], rel=1e-5)
    assert whole["accuracy"] == batched["accuracy"]
    logits = model(x)
    expected = torch.nn.functional.cross_entropy(logits, y).item()
    assert whole["loss"] == pytest.approx(expected, rel=1e-5)
    assert model.training  # the mode it was in


def test_fit_rejects_mismatched_configs(tiny: SequenceData) -> None:
    with pytest.raises(ValueError, match="input_size=3 does not match"):
        fit(ModelConfig(3, 1), TrainConfig(max_epochs=1), tiny)
    with pytest.raises(ValueError, match="output_size=2 does not match"):
        fit(ModelConfig(2, 2), TrainConfig(max_epochs=1), tiny)
    with pytest.raises(ValueError, match="task='classification' does not match"):
        fit(ModelConfig(2, 2, task="classification"), TrainConfig(max_epochs=1), tiny)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"nesterov": True, "momentum": 0.9}, "optimizer"),  # adam
        ({"optimizer": "sgd", "nesterov": True}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 32.0}, "batch_size"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"scheduler": "linear"}, "scheduler"),
        ({"step_size": 0}, "step_size"),
        ({"gamma": 0.0}, "gamma"),
        ({"scheduler": "plateau", "gamma": 1.0}, "gamma"),
        ({"patience": 0}, "patience"),
        ({"seed": 1.5}, "seed"),
        ({"device": "gpu:x"}, "device"),
        ({"amp": "yes"}, "amp"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
    ],
)
def test_train_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"but got {field}="):
        TrainConfig(**kwargs)


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(None).type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_fit(tiny: SequenceData, amp: bool) -> None:
    result = fit(TINY_MODEL, TrainConfig(max_epochs=2, amp=amp, clip_norm=1.0), tiny)
    assert result.device.startswith("cuda")
    assert all(v.device.type == "cpu" for v in result.state_dict.values())
