"""Training: fit() one SequenceModel on one SequenceData and report every epoch.

The data set is moved to the device once; each epoch shuffles with torch.randperm and slices
batches from those tensors (no DataLoader: on a GPU its per-batch overhead, not the model, would
set the pace). Text data (token ids with lengths) is batched by length buckets instead
(rnntune.models.text.bucket_batches, seeded): each batch is trimmed to its longest row and packed, so
padding is neither computed nor fed to the recurrent state. After each epoch the val split is evaluated under torch.no_grad() and
on_epoch_end(result) is called: that is where a tuner reports and prunes, without this module
knowing about it. Returning True from the callback stops training; an exception raised by it
propagates unchanged.

fit() reads as its steps: the setup (_Trainer.build, the splits on the device, the epochs'
batches), one epoch (_train_epoch), validation (_validate), the checkpoint of the best epoch
(_Best) and the stop after an epoch (_stop_reason: the callback, early stopping). evaluate() and
inference_latency_ms() live in rnntune.models.evaluation; fit's callers import them from here too.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnntune.models.config import ModelConfig, TrainConfig
from rnntune.models.data import SequenceData
from rnntune.models.evaluation import evaluate, inference_latency_ms
from rnntune.models.recurrent import SequenceModel
from rnntune.models.text import bucket_batches

__all__ = [
    "DivergedError",
    "EpochResult",
    "FitResult",
    "TrainingStopped",
    "evaluate",
    "fit",
    "inference_latency_ms",
    "pick_device",
]


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
    trainer = _Trainer.build(model_config, tc, data, device, model_factory)
    # the whole data set lives on the device; batches are index tensors into it
    train = _Split.on(device, data.x_train, data.y_train, data.lengths_train)
    val = _Split.on(device, data.x_val, data.y_val, data.lengths_val)
    epoch_batches = _epoch_batches(train, tc.batch_size, tc.seed, device)

    history: list[EpochResult] = []
    best = _Best()
    stopped = "max_epochs"
    train_seconds = 0.0
    for epoch in range(1, tc.max_epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(trainer, train, epoch_batches(), should_stop or _never, epoch)
        train_seconds += time.perf_counter() - started
        result = _validate(trainer.model, val, model_config.task, tc, epoch, train_loss, started)
        history.append(result)
        best.update(result, trainer.model)
        trainer.schedule(result.val_loss)
        reason = _stop_reason(result, best.epoch, tc.patience, on_epoch_end or _never)
        if reason is not None:
            stopped = reason
            break

    n_samples = len(train.x) * len(history)
    return FitResult(
        history=history,
        best_epoch=best.epoch,
        best_val_loss=best.val_loss,
        stopped=stopped,
        state_dict=best.state_dict,
        samples_per_s=n_samples / train_seconds if train_seconds > 0 else math.inf,
        device=str(device),
    )


def _never(*args: object) -> bool:
    """The callbacks fit() was not given: never stop."""
    return False


@dataclass
class _Trainer:
    """What one training step needs: the model, its optimizer and learning-rate schedule, the
    loss and mixed precision (CUDA only: bf16, or fp16 with a GradScaler; off, the autocast
    context and the disabled GradScaler are no-ops)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    autocast: Callable[[], contextlib.AbstractContextManager[None]]
    grad_scaler: torch.amp.GradScaler
    clip_norm: float | None

    @classmethod
    def build(
        cls,
        model_config: ModelConfig,
        tc: TrainConfig,
        data: SequenceData,
        device: torch.device,
        model_factory: Callable[[ModelConfig], nn.Module] | None,
    ) -> _Trainer:
        """A fresh model on the device (a user's embedding matrix loaded) and its training parts."""
        model = (model_factory or SequenceModel)(model_config).to(device)
        embedding = getattr(model, "embedding", None)  # a model plugin may have none
        if data.embeddings is not None and model_config.is_text and isinstance(embedding, nn.Embedding):
            with torch.no_grad():  # a user's matrix, in vocab order
                embedding.weight.copy_(torch.as_tensor(data.embeddings))
        optimizer = _make_optimizer(model, tc)
        use_amp = tc.amp and device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        return cls(
            model=model,
            optimizer=optimizer,
            scheduler=_make_scheduler(optimizer, tc),
            loss_fn=F.mse_loss if model_config.task == "regression" else F.cross_entropy,
            autocast=partial(torch.autocast, device_type="cuda", dtype=amp_dtype)
            if use_amp
            else contextlib.nullcontext,
            grad_scaler=torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16),
            clip_norm=tc.clip_norm,
        )

    def step(self, inputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        """One optimizer step on one batch; its mean loss, left on the device."""
        with self.autocast():
            out = self.model(*inputs)  # (b, output_size)
        loss = self.loss_fn(out.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(loss).backward()
        if self.clip_norm is not None:
            self.grad_scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        return loss.detach()

    def schedule(self, val_loss: float) -> None:
        """The learning-rate schedule's step at an epoch's end (plateau reads the val loss)."""
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()


@dataclass
class _Split:
    """One split's tensors: x and y on the device; lengths (text, variable-length rows) on the
    CPU, where packing reads them."""

    x: Tensor  # (N, T, F) or (N, T) token ids
    y: Tensor  # (N, K) float or (N,) int64
    lengths: Tensor | None  # (N,) real steps per row

    @classmethod
    def on(cls, device: torch.device, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None) -> _Split:
        return cls(
            torch.as_tensor(x, device=device),
            torch.as_tensor(y, device=device),
            None if lengths is None else torch.as_tensor(lengths),
        )

    def batch(self, index: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """The model's inputs and the targets of the rows ``index``; text trimmed to its longest row."""
        if self.lengths is None:
            return (self.x[index],), self.y[index]  # (b, T, F), (b, K) or (b,)
        lb = self.lengths[index]  # (b,) on the CPU
        index = index.to(self.x.device, non_blocking=True)
        return (self.x[index, : int(lb.max())], lb), self.y[index]  # (b, T_b) ids, (b,)


def _epoch_batches(train: _Split, batch_size: int, seed: int, device: torch.device) -> Callable[[], list[Tensor]]:
    """Each epoch's batches of row indices, seeded: slices of a permutation on the device, or
    for text length buckets on the CPU (rnntune.models.text.bucket_batches)."""
    if train.lengths is not None:
        lengths, buckets = train.lengths, torch.Generator().manual_seed(seed)
        return lambda: bucket_batches(lengths, batch_size, buckets)
    n = len(train.x)
    shuffles = torch.Generator(device=device)
    shuffles.manual_seed(seed)

    def shuffled() -> list[Tensor]:
        order = torch.randperm(n, device=device, generator=shuffles)  # (N,)
        return [order[start : start + batch_size] for start in range(0, n, batch_size)]

    return shuffled


def _train_epoch(
    trainer: _Trainer, train: _Split, batches: list[Tensor], should_stop: Callable[[], bool], epoch: int
) -> float:
    """One pass over the batches; the epoch's mean training loss."""
    trainer.model.train()
    batch_losses = []  # kept on the device: no sync per batch
    for index in batches:
        if should_stop():
            raise TrainingStopped(f"stopped during epoch {epoch}")
        inputs, target = train.batch(index)
        batch_losses.append(trainer.step(inputs, target))
    # weight the batch means by their sizes (all full but one)
    weights = torch.tensor([float(len(index)) for index in batches], device=train.x.device)
    return float((torch.stack(batch_losses) * weights).sum().item() / len(train.x))


def _validate(
    model: nn.Module, val: _Split, task: str, tc: TrainConfig, epoch: int, train_loss: float, started: float
) -> EpochResult:
    """The epoch's result: its val loss and metrics; DivergedError when a loss is not finite."""
    metrics = evaluate(model, val.x, val.y, task, tc.eval_batch_size, val.lengths)
    val_loss = metrics.pop("loss")
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        raise DivergedError(
            f"training diverged at epoch {epoch}: {train_loss=}, {val_loss=} "
            f"(optimizer={tc.optimizer!r}, lr={tc.lr}, clip_norm={tc.clip_norm})."
        )
    return EpochResult(
        epoch=epoch,
        train_loss=train_loss,
        val_loss=val_loss,
        val_metrics=metrics,
        seconds=time.perf_counter() - started,
    )


@dataclass
class _Best:
    """The checkpoint: the epoch with the lowest val loss so far and its weights, on the CPU."""

    epoch: int = 0
    val_loss: float = math.inf
    state_dict: dict[str, Tensor] = field(default_factory=dict)

    def update(self, result: EpochResult, model: nn.Module) -> None:
        if result.val_loss < self.val_loss:
            self.epoch, self.val_loss = result.epoch, result.val_loss
            self.state_dict = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _stop_reason(
    result: EpochResult, best_epoch: int, patience: int | None, on_epoch_end: Callable[[EpochResult], bool | None]
) -> str | None:
    """Why training ends after this epoch: the callback asked ("callback"), or no better val
    loss for ``patience`` epochs ("early_stopping"); None: it goes on."""
    if on_epoch_end(result):
        return "callback"
    if patience is not None and result.epoch - best_epoch >= patience:
        return "early_stopping"
    return None


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
