"""Evaluation: a model's loss and metrics over a whole split, and its batch-1 inference latency.

Both run under torch.no_grad() in eval mode and give the model back in the mode it came in.
evaluate() keeps its sums on the device and syncs once, at the end; text batches are trimmed to
their longest row and packed, as in training.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnntune.models.config import TASKS, _is_int


@torch.no_grad()
def inference_latency_ms(
    model: nn.Module, x: Tensor | np.ndarray, lengths: Tensor | np.ndarray | None = None, *, repeats: int = 30
) -> float:
    """Batch-1 inference time in milliseconds on the model's device: the median of ``repeats``
    timed forward passes of ``x[:1]`` (after three untimed warm-up passes), synchronising the
    device around each so that a GPU's queued work is counted."""
    if not _is_int(repeats) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, but got {repeats=}.")
    device = next(model.parameters()).device
    one = torch.as_tensor(x[:1], device=device)  # (1, T, F) or (1, T) token ids
    args = () if lengths is None else (torch.as_tensor(lengths[:1], dtype=torch.int64).cpu(),)
    if args:
        one = one[:, : int(args[0].max())]
    on_gpu = device.type == "cuda"

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize(device)

    was_training = model.training
    model.eval()
    times: list[float] = []
    for i in range(repeats + 3):
        sync()
        started = time.perf_counter()
        model(one, *args)
        sync()
        if i >= 3:
            times.append(time.perf_counter() - started)
    model.train(was_training)
    return 1000.0 * float(np.median(times))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    task: str,
    batch_size: int = 1024,
    lengths: Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """{"loss": MSE or cross-entropy, "mae" (regression) or "accuracy" and "f1" (classification:
    macro-F1 over the classes present in y or the predictions, as scikit-learn's
    ``f1_score(average="macro")``)} over all of (x, y). ``lengths`` (N,): text batches, each
    trimmed to its longest row and packed."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, but got {task=}.")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, but got {batch_size=}.")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)}, {len(y)}.")
    device = next(model.parameters()).device
    x = torch.as_tensor(x, device=device)
    y = torch.as_tensor(y, device=device)
    if lengths is not None:
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
    score = _RegressionScore(device) if task == "regression" else _ClassificationScore(device)
    was_training = model.training
    model.eval()
    for start in range(0, len(x), batch_size):
        rows = slice(start, start + batch_size)
        score.add(_predict(model, x, lengths, rows), y[rows])
    model.train(was_training)
    return score.result(y)


def _predict(model: nn.Module, x: Tensor, lengths: Tensor | None, rows: slice) -> Tensor:
    """The model's outputs for ``x[rows]`` as floats, (b, output_size); text trimmed to its longest row."""
    if lengths is None:
        out: Tensor = model(x[rows])  # (b, output_size)
    else:
        lb = lengths[rows]  # (b,) on the CPU
        out = model(x[rows, : int(lb.max())], lb)  # (b, output_size)
    return out.float()


class _Score:
    """An evaluation's sums over its batches, kept on the device: one sync, in result()."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.metric_sum = torch.zeros((), device=device)

    def add(self, out: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def result(self, y: Tensor) -> dict[str, float]:
        raise NotImplementedError


class _RegressionScore(_Score):
    """Squared and absolute errors, averaged over every predicted value, as F.mse_loss does in training."""

    def add(self, out: Tensor, target: Tensor) -> None:
        self.loss_sum += F.mse_loss(out, target, reduction="sum")
        self.metric_sum += (out - target).abs().sum()

    def result(self, y: Tensor) -> dict[str, float]:
        loss, metric = (torch.stack([self.loss_sum, self.metric_sum]) / y.numel()).tolist()  # one device sync
        return {"loss": loss, "mae": metric}


class _ClassificationScore(_Score):
    """Cross-entropy, hits and, per class (n_classes,), true positives, true and predicted
    counts (never n_classes**2) for the macro-F1."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.n_classes = 0  # the model's, from its first batch
        self.hits = torch.zeros(0, dtype=torch.int64, device=device)
        self.n_true = torch.zeros(0, dtype=torch.int64, device=device)
        self.n_predicted = torch.zeros(0, dtype=torch.int64, device=device)

    def add(self, out: Tensor, target: Tensor) -> None:
        self.loss_sum += F.cross_entropy(out, target, reduction="sum")
        predicted = out.argmax(dim=1)  # (b,)
        self.metric_sum += (predicted == target).sum()
        if self.n_classes == 0:
            self.n_classes = out.shape[1]
            self.hits, self.n_true, self.n_predicted = (
                torch.zeros(self.n_classes, dtype=torch.int64, device=out.device) for _ in range(3)
            )
        self.hits += torch.bincount(target[predicted == target], minlength=self.n_classes)
        self.n_true += torch.bincount(target, minlength=self.n_classes)
        self.n_predicted += torch.bincount(predicted, minlength=self.n_classes)

    def result(self, y: Tensor) -> dict[str, float]:
        count = len(y)
        tp = self.hits.double()
        denominator = (self.n_true + self.n_predicted).double()  # 2TP + FP + FN per class
        present = denominator > 0
        f1 = (2 * tp[present] / denominator[present]).mean()
        loss, metric, f1_value = torch.stack(
            [self.loss_sum / count, self.metric_sum / count, f1.to(self.loss_sum.dtype)]
        ).tolist()
        return {"loss": loss, "accuracy": metric, "f1": f1_value}
