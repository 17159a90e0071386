"""What a model and its training may be: the allowed values and the two config dataclasses.

Torch-free (numbers only), so the API and the spec check against the same lists the models use:
``rnntune.service.spec`` imports them from here and never repeats them. ``ModelConfig`` builds a
``SequenceModel`` (``rnntune.models.recurrent``), ``TrainConfig`` drives ``fit()``
(``rnntune.models.train``); both check every field when constructed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

CELLS = ("rnn", "lstm", "gru")
TASKS = ("regression", "classification")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULERS = ("none", "cosine", "step", "plateau")

BUILTIN_DATASETS: dict[str, str] = {
    "sine": "Noisy sine waves with random frequency, phase and amplitude; forecast the next "
    "`horizon` steps (split by series).",
    "adding": "The adding problem (Hochreiter & Schmidhuber 1997): (T, 2) sequences of values "
    "and a marker channel; regress the sum of the two marked values.",
    "sunspots": "Yearly sunspot activity 1700-2008 (309 points, statsmodels); chronological forecasting.",
    "co2": "Mauna Loa CO2, weekly 1958-2001 (statsmodels), NaNs interpolated, monthly means "
    "by default; chronological forecasting.",
    "digits": "8x8 handwritten digits (scikit-learn) read row by row: 8 steps of 8 features; "
    "10-class classification, stratified split.",
    "csv": "A time-series CSV file (path, target, inputs); chronological forecasting with train-only scaling.",
    "npz": "An .npz file with X (N, T, F) and y: (N,) integer labels (classification) or "
    "(N,) / (N, K) floats (regression); optionally lengths (N,) for sequences padded to T.",
    "text": "Labelled text (CSV or JSONL with text and label columns): token ids padded to "
    "(N, T) with lengths, vocabulary built on the train split; stratified split.",
}
DATASETS = tuple(BUILTIN_DATASETS)
FILE_DATASETS = ("csv", "npz", "text")  # read from a file: a path (or an uploaded data set)
CLASSIFICATION_DATASETS = ("digits", "npz", "text")  # the ones that can be classification
# forecasting: rolling-origin folds over time steps (sine: over its independent series)
FOLD_DATASETS = ("sine", "sunspots", "co2", "csv")
# the others: k-fold over train + val (stratified for classification; the val split is the last fold)
KFOLD_DATASETS = ("adding", "digits", "npz", "text")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ModelConfig:
    input_size: int  # F: features per time step
    output_size: int  # regression: horizon * n_targets; classification: n_classes
    task: str = "regression"
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between recurrent layers (only when num_layers > 1) and before the head
    # text: token ids in (input_size must be 1), an nn.Embedding(vocab_size, embed_dim) first
    vocab_size: int | None = None
    embed_dim: int | None = None
    padding_idx: int = 0
    freeze_embeddings: bool = False  # keep the embedding as loaded (e.g. a user's matrix)
    # LSTNet's highway: a linear map of the last highway_window steps of input feature
    # highway_target (a forecaster's target column) added to the head's output (regression only)
    highway: bool = False
    highway_window: int = 24
    highway_target: int = 0

    def __post_init__(self) -> None:
        input_size, output_size = self.input_size, self.output_size
        hidden_size, num_layers = self.hidden_size, self.num_layers
        task, cell = self.task, self.cell
        bidirectional, dropout = self.bidirectional, self.dropout
        if not _is_int(input_size) or input_size < 1:
            raise ValueError(f"input_size must be an integer >= 1, but got {input_size=}.")
        if not _is_int(output_size) or output_size < 1:
            raise ValueError(f"output_size must be an integer >= 1, but got {output_size=}.")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, but got {task=}.")
        if task == "classification" and output_size < 2:
            raise ValueError(
                f"output_size is the number of classes for classification and must be >= 2, but got {output_size=}."
            )
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, but got {cell=}.")
        if not _is_int(hidden_size) or hidden_size < 1:
            raise ValueError(f"hidden_size must be an integer >= 1, but got {hidden_size=}.")
        if not _is_int(num_layers) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, but got {num_layers=}.")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be a bool, but got {bidirectional=}.")
        if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), but got {dropout=}.")
        self._check_highway()
        vocab_size, embed_dim = self.vocab_size, self.embed_dim
        padding_idx, freeze_embeddings = self.padding_idx, self.freeze_embeddings
        if not isinstance(freeze_embeddings, bool):
            raise ValueError(f"freeze_embeddings must be a bool, but got {freeze_embeddings=}.")
        if vocab_size is None:
            if embed_dim is not None or freeze_embeddings:
                raise ValueError(
                    f"embed_dim and freeze_embeddings need vocab_size (a text model), but got "
                    f"{embed_dim=}, {freeze_embeddings=}."
                )
            return
        if not _is_int(vocab_size) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, but got {vocab_size=}.")
        if not _is_int(embed_dim) or embed_dim < 1:
            raise ValueError(f"embed_dim must be an integer >= 1 with vocab_size, but got {embed_dim=}.")
        if not _is_int(padding_idx) or not 0 <= padding_idx < vocab_size:
            raise ValueError(f"padding_idx must be in [0, vocab_size), but got {padding_idx=}.")
        if input_size != 1:
            raise ValueError(f"a text model reads one token id per step: input_size must be 1, but got {input_size=}.")

    def _check_highway(self) -> None:
        highway, window, target = self.highway, self.highway_window, self.highway_target
        if not isinstance(highway, bool):
            raise ValueError(f"highway must be a bool, but got {highway=}.")
        if not _is_int(window) or window < 1:
            raise ValueError(f"highway_window must be an integer >= 1, but got {window=}.")
        if not _is_int(target) or not 0 <= target < self.input_size:
            raise ValueError(f"highway_target must be a feature index in [0, input_size), but got {target=}.")
        if highway and (self.task != "regression" or self.vocab_size is not None):
            raise ValueError(f"highway applies to numeric regression (forecasting), but got task={self.task!r}.")

    @property
    def is_text(self) -> bool:
        return self.vocab_size is not None

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0  # sgd and rmsprop; the other optimizers ignore it
    nesterov: bool = False  # sgd only, and only with momentum > 0
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 10
    clip_norm: float | None = None  # max global gradient norm (clip_grad_norm_) when set
    scheduler: str = "none"  # stepped once per epoch
    step_size: int = 10  # "step": epochs between decays
    gamma: float = 0.5  # "step": decay factor; "plateau": reduction factor
    patience: int | None = None  # early stopping: epochs without a better val_loss; None = off
    seed: int = 0
    device: str | None = None  # None = cuda if available, else cpu
    amp: bool = True  # mixed precision (bf16, or fp16 with a GradScaler); CUDA only
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        optimizer, lr, momentum, nesterov = self.optimizer, self.lr, self.momentum, self.nesterov
        weight_decay, batch_size, max_epochs = self.weight_decay, self.batch_size, self.max_epochs
        clip_norm, scheduler, step_size, gamma = (
            self.clip_norm, self.scheduler, self.step_size, self.gamma
        )  # fmt: skip
        patience, seed, device, amp = self.patience, self.seed, self.device, self.amp
        eval_batch_size = self.eval_batch_size
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, but got {optimizer=}.")
        if not _is_real(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, but got {lr=}.")
        if not _is_real(momentum) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), but got {momentum=}.")
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov must be a bool, but got {nesterov=}.")
        if nesterov and optimizer != "sgd":
            raise ValueError(f"nesterov applies to optimizer='sgd' only, but got {optimizer=}.")
        if nesterov and momentum <= 0:
            raise ValueError(f"nesterov=True needs momentum > 0, but got {momentum=}.")
        if not _is_real(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, but got {weight_decay=}.")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, but got {batch_size=}.")
        if not _is_int(max_epochs) or max_epochs < 1:
            raise ValueError(f"max_epochs must be an integer >= 1, but got {max_epochs=}.")
        if clip_norm is not None and (not _is_real(clip_norm) or clip_norm <= 0):
            raise ValueError(f"clip_norm must be None or a number > 0, but got {clip_norm=}.")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, but got {scheduler=}.")
        if not _is_int(step_size) or step_size < 1:
            raise ValueError(f"step_size must be an integer >= 1, but got {step_size=}.")
        if not _is_real(gamma) or not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], but got {gamma=}.")
        if scheduler == "plateau" and gamma == 1.0:
            raise ValueError(f"scheduler='plateau' needs gamma < 1, but got {gamma=}.")
        if patience is not None and (not _is_int(patience) or patience < 1):
            raise ValueError(f"patience must be None or an integer >= 1, but got {patience=}.")
        if not _is_int(seed):
            raise ValueError(f"seed must be an integer, but got {seed=}.")
        if device is not None:
            import torch  # only to parse the device string: the configs import without torch

            try:
                torch.device(device)
            except (RuntimeError, TypeError, ValueError):
                raise ValueError(f"device must be None or a torch device string, but got {device=}.") from None
        if not isinstance(amp, bool):
            raise ValueError(f"amp must be a bool, but got {amp=}.")
        if not _is_int(eval_batch_size) or eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be an integer >= 1, but got {eval_batch_size=}.")
