"""Training: fit() one SequenceModel on one SequenceData and report every epoch.

The data set is moved to the device once; each epoch shuffles with torch.randperm and slices
batches from those tensors (no DataLoader: on a GPU its per-batch overhead, not the model, would
set the pace). Text data (token ids with lengths) is batched by length buckets instead
(rnntune.models.text.bucket_batches, seeded): each batch is trimmed to its longest row and packed, so
padding is neither computed nor fed to the recurrent state. After each epoch the val split is evaluated under torch.no_grad() and
on_epoch_end(result) is called: that is where a tuner reports and prunes, without this module
knowing about it. Returning True from the callback stops training; an exception raised by it
propagates unchanged.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnntune.models.config import TASKS, ModelConfig, TrainConfig, _is_int
from rnntune.models.data import SequenceData
from rnntune.models.recurrent import SequenceModel
from rnntune.models.text import bucket_batches


@dataclass
class EpochResult:
    epoch: int  # 1-based
    train_loss: float  # mean training loss over the epoch's batches (weighted by batch size)
    val_loss: float  # MSE (regression) / cross-entropy (classification) on the val split
    val_metrics: dict[str, float]  # regression: {"mae": ...}; classification: {"accuracy": ...}
    seconds: float  # wall time of the epoch, evaluation included


class TrainingStopped(Exception):
    """Raised by fit when ``should_stop`` asked it to stop mid-epoch."""


class DivergedError(RuntimeError):
    """A train or val loss became NaN or infinite."""


@dataclass
class FitResult:
    history: list[EpochResult]
    best_epoch: int
    best_val_loss: float
    stopped: str  # "max_epochs" | "early_stopping" | "callback"
    state_dict: dict[str, Tensor] = field(repr=False)  # weights of the best epoch, on the CPU
    samples_per_s: float  # training samples per second of training (evaluation excluded)
    device: str


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """None or "auto": cuda if available, else cpu; otherwise the named device, if usable."""
    if preferred is None or preferred == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preferred)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"not a torch device: {preferred=}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"CUDA is not available on this machine, but got {preferred=}.")
    return device


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
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    metric_sum = torch.zeros((), device=device)
    n_classes = 0  # classification: the model's, from its first batch
    # per class (n_classes,): true positives, true and predicted counts; never n_classes**2
    hits = torch.zeros(0, dtype=torch.int64, device=device)
    n_true = torch.zeros(0, dtype=torch.int64, device=device)
    n_predicted = torch.zeros(0, dtype=torch.int64, device=device)
    for start in range(0, len(x), batch_size):
        if lengths is None:
            out = model(x[start : start + batch_size]).float()  # (b, output_size)
        else:
            lb = lengths[start : start + batch_size]
            out = model(x[start : start + batch_size, : int(lb.max())], lb).float()
        target = y[start : start + batch_size]
        if task == "regression":
            loss_sum += F.mse_loss(out, target, reduction="sum")
            metric_sum += (out - target).abs().sum()
        else:
            loss_sum += F.cross_entropy(out, target, reduction="sum")
            predicted = out.argmax(dim=1)
            metric_sum += (predicted == target).sum()
            if n_classes == 0:
                n_classes = out.shape[1]
                hits, n_true, n_predicted = (torch.zeros(n_classes, dtype=torch.int64, device=device) for _ in range(3))
            hits += torch.bincount(target[predicted == target], minlength=n_classes)
            n_true += torch.bincount(target, minlength=n_classes)
            n_predicted += torch.bincount(predicted, minlength=n_classes)
    model.train(was_training)
    # regression averages over every predicted value, like F.mse_loss does in training
    count = y.numel() if task == "regression" else len(y)
    if task == "regression":
        loss, metric = (torch.stack([loss_sum, metric_sum]) / count).tolist()  # one device sync
        return {"loss": loss, "mae": metric}
    tp = hits.double()
    denominator = (n_true + n_predicted).double()  # 2TP + FP + FN per class
    present = denominator > 0
    f1 = (2 * tp[present] / denominator[present]).mean()
    loss, metric, f1 = torch.stack([loss_sum / count, metric_sum / count, f1.to(loss_sum.dtype)]).tolist()
    return {"loss": loss, "accuracy": metric, "f1": f1}


def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    data: SequenceData,
    on_epoch_end: Callable[[EpochResult], bool | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    model_factory: Callable[[ModelConfig], nn.Module] | None = None,
) -> FitResult:
    """Train a fresh SequenceModel; the same configs and seed give the same curve on one device.

    ``should_stop`` is polled before every batch; when it answers True, fit raises
    :class:`TrainingStopped` (a worker asked to shut down stops within one batch).
    ``model_factory`` builds another module with SequenceModel's contract instead (a user's
    model plugin): (B, T, F) or token ids + lengths in, (B, output_size) out."""
    _check_compatible(model_config, data)
    tc = train_config
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)  # weights and dropout (every device)
    np.random.seed(tc.seed % 2**32)
    generator = torch.Generator(device=device)  # the epochs' shuffles
    generator.manual_seed(tc.seed)

    model = (model_factory or SequenceModel)(model_config).to(device)
    embedding = getattr(model, "embedding", None)  # a model plugin may have none
    if data.embeddings is not None and model_config.is_text and isinstance(embedding, nn.Embedding):
        with torch.no_grad():  # a user's matrix, in vocab order
            embedding.weight.copy_(torch.as_tensor(data.embeddings))
    optimizer = _make_optimizer(model, tc)
    scheduler = _make_scheduler(optimizer, tc)
    loss_fn = F.mse_loss if model_config.task == "regression" else F.cross_entropy
    use_amp = tc.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    grad_scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None

    def autocast() -> contextlib.AbstractContextManager[None]:
        if not use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=amp_dtype)

    # the whole data set lives on the device; batches are slices of a permutation of it
    x_train = torch.as_tensor(data.x_train, device=device)  # (N, T, F)
    y_train = torch.as_tensor(data.y_train, device=device)  # (N, K) float or (N,) int64
    x_val = torch.as_tensor(data.x_val, device=device)
    y_val = torch.as_tensor(data.y_val, device=device)
    n_train, batch_size = len(x_train), tc.batch_size
    # text: lengths stay on the CPU (packing reads them there); batches are length buckets
    lengths_train = None if data.lengths_train is None else torch.as_tensor(data.lengths_train)
    lengths_val = None if data.lengths_val is None else torch.as_tensor(data.lengths_val)
    bucket_generator = torch.Generator().manual_seed(tc.seed) if lengths_train is not None else None

    history: list[EpochResult] = []
    best_epoch, best_val_loss, best_state = 0, math.inf, {}
    stopped = "max_epochs"
    train_seconds = 0.0
    for epoch in range(1, tc.max_epochs + 1):
        started = time.perf_counter()
        model.train()
        batch_losses = []  # kept on the device: no sync per batch
        if lengths_train is None:
            order = torch.randperm(n_train, device=device, generator=generator)
            batches = [order[start : start + batch_size] for start in range(0, n_train, batch_size)]
        else:
            batches = bucket_batches(lengths_train, batch_size, bucket_generator)
        for index in batches:
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped during epoch {epoch}")
            if lengths_train is None:
                xb, yb = x_train[index], y_train[index]  # (b, T, F), (b, K) or (b,)
                with autocast():
                    out = model(xb)  # (b, output_size)
            else:
                lb = lengths_train[index]  # (b,) on the CPU
                index = index.to(device, non_blocking=True)
                xb, yb = x_train[index, : int(lb.max())], y_train[index]  # (b, T_b) ids, (b,)
                with autocast():
                    out = model(xb, lb)  # (b, output_size)
            loss = loss_fn(out.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            if grad_scaler is not None:
                grad_scaler.scale(loss).backward()
                if tc.clip_norm is not None:
                    grad_scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
                grad_scaler.step(optimizer)
                grad_scaler.update()
            else:
                loss.backward()
                if tc.clip_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
                optimizer.step()
            batch_losses.append(loss.detach())
        # weight the batch means by their sizes (all full but one)
        weights = torch.tensor([float(len(index)) for index in batches], device=device)
        train_loss = (torch.stack(batch_losses) * weights).sum().item() / n_train
        train_seconds += time.perf_counter() - started

        metrics = evaluate(model, x_val, y_val, model_config.task, tc.eval_batch_size, lengths_val)
        val_loss = metrics.pop("loss")
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise DivergedError(
                f"training diverged at epoch {epoch}: {train_loss=}, {val_loss=} "
                f"(optimizer={tc.optimizer!r}, lr={tc.lr}, clip_norm={tc.clip_norm})."
            )
        result = EpochResult(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_metrics=metrics,
            seconds=time.perf_counter() - started,
        )
        history.append(result)
        if val_loss < best_val_loss:
            best_epoch, best_val_loss = epoch, val_loss
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None:
            scheduler.step()

        if on_epoch_end is not None and on_epoch_end(result):
            stopped = "callback"
            break
        if tc.patience is not None and epoch - best_epoch >= tc.patience:
            stopped = "early_stopping"
            break

    n_samples = n_train * len(history)
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_val_loss=best_val_loss,
        stopped=stopped,
        state_dict=best_state,
        samples_per_s=n_samples / train_seconds if train_seconds > 0 else math.inf,
        device=str(device),
    )


def _check_compatible(model_config: ModelConfig, data: SequenceData) -> None:
    if model_config.task != data.task:
        raise ValueError(
            f"model_config.task={model_config.task!r} does not match the data set "
            f"{data.name!r}, whose task is {data.task!r}."
        )
    if model_config.vocab_size != data.vocab_size:
        raise ValueError(
            f"model_config.vocab_size={model_config.vocab_size} does not match the data set "
            f"{data.name!r}, whose vocabulary has {data.vocab_size} tokens."
        )
    if model_config.input_size != data.input_size:
        raise ValueError(
            f"model_config.input_size={model_config.input_size} does not match the data set "
            f"{data.name!r}, which has {data.input_size} features per step."
        )
    if model_config.output_size != data.output_size:
        raise ValueError(
            f"model_config.output_size={model_config.output_size} does not match the data set "
            f"{data.name!r}, whose output_size is {data.output_size}."
        )


def _make_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if tc.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov,
            weight_decay=tc.weight_decay,
        )  # fmt: skip
    if tc.optimizer == "adam":
        return torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    return torch.optim.Adagrad(params, lr=tc.lr, weight_decay=tc.weight_decay)


def _make_scheduler(optimizer: torch.optim.Optimizer, tc: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    if tc.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tc.max_epochs)
    if tc.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.step_size, gamma=tc.gamma)
    if tc.scheduler == "plateau":
        patience = max(1, tc.patience // 2) if tc.patience is not None else 2
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=tc.gamma, patience=patience)
    return None
