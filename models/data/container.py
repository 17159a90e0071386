"""The container every loader returns: SequenceData, the arrays of the train/val/test splits, checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rnntune.models.config import TASKS

if TYPE_CHECKING:  # rnntune.models.text imports torch; the data sets need only its types
    from rnntune.models.text import TextInfo

# {"x_mean": [F], "x_std": [F], "y_mean": [output_size], "y_std": [output_size]} (y_* for regression)
Scaler = dict[str, list[float]]


class DataError(ValueError):
    """Broken data or data parameters; the message names the data set or field and the reason."""


@dataclass
class SequenceData:
    name: str
    task: str  # "regression" | "classification"
    x_train: np.ndarray = field(repr=False)  # float32 (N, T, F)
    y_train: np.ndarray = field(repr=False)  # float32 (N, output_size) or int64 (N,)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    n_classes: int | None = None
    # fitted on the train split; x_scaled = (x - x_mean) / x_std, y likewise.
    scaler: Scaler | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-able facts about the data and its splits
    # Text (load_dataset("text")): x_* are int64 token ids (N, T) padded with 0 and lengths_*
    # int64 (N,) the true lengths (>= 1); each split is padded to its own longest row. ``text``
    # is what a model file needs to predict from raw strings (tokenizer settings, vocabulary,
    # label names, max_length); ``embeddings`` an optional (vocab_size, D) float32 matrix that
    # fit() loads into the model's embedding. A numeric data set of variable-length sequences
    # (an .npz with ``lengths``) has lengths_* too, x_* padded to one T (with zeros), and no text.
    lengths_train: np.ndarray | None = field(default=None, repr=False)
    lengths_val: np.ndarray | None = field(default=None, repr=False)
    lengths_test: np.ndarray | None = field(default=None, repr=False)
    text: TextInfo | None = field(default=None, repr=False)
    embeddings: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"{self.name}: task must be one of {TASKS}, but got {self.task=}.")
        if self.text is not None:
            self._check_text()
            return
        y_dtype = np.int64 if self.task == "classification" else np.float32
        for split in ("train", "val", "test"):
            x = np.ascontiguousarray(getattr(self, f"x_{split}"), dtype=np.float32)
            y = np.ascontiguousarray(getattr(self, f"y_{split}"), dtype=y_dtype)
            if x.ndim != 3:
                raise DataError(f"{self.name}: x_{split} must be (N, T, F), but got {x.shape}.")
            if self.task == "regression" and y.ndim != 2:
                raise DataError(f"{self.name}: y_{split} must be (N, K), but got {y.shape}.")
            if self.task == "classification" and y.ndim != 1:
                raise DataError(f"{self.name}: y_{split} must be (N,), but got {y.shape}.")
            if len(x) != len(y):
                raise DataError(f"{self.name}: x_{split} has {len(x)} rows but y_{split} has {len(y)}.")
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", y)
        if len(self.x_train) == 0 or len(self.x_val) == 0:
            raise DataError(f"{self.name}: the train and val splits must not be empty.")
        for split in ("val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[1:] != self.x_train.shape[1:] or y.shape[1:] != self.y_train.shape[1:]:
                raise DataError(f"{self.name}: the {split} split's shapes differ from train's.")
        if self.task == "classification":
            if self.n_classes is None:
                self.n_classes = int(self.y_train.max()) + 1
            for split in ("train", "val", "test"):
                y = getattr(self, f"y_{split}")
                if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
                    raise DataError(f"{self.name}: y_{split} has labels outside [0, {self.n_classes}).")
        self._check_lengths()

    def _check_lengths(self) -> None:
        """Variable-length numeric sequences: lengths_* (N,) int64 in [1, T] for every split, or none."""
        given = [getattr(self, f"lengths_{split}") is not None for split in ("train", "val", "test")]
        if not any(given):
            return
        if not all(given):
            raise DataError(f"{self.name}: lengths must be given for every split or none.")
        for split in ("train", "val", "test"):
            lengths = np.ascontiguousarray(getattr(self, f"lengths_{split}"), dtype=np.int64)
            x = getattr(self, f"x_{split}")
            if lengths.shape != (len(x),):
                raise DataError(f"{self.name}: lengths_{split} must be ({len(x)},), but got {lengths.shape}.")
            if len(x) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
                raise DataError(f"{self.name}: lengths_{split} must be in [1, {x.shape[1]}].")
            setattr(self, f"lengths_{split}", lengths)

    def _check_text(self) -> None:
        if self.task != "classification" or self.text is None:
            raise DataError(f"{self.name}: token-id data must be classification with its text info.")
        for split in ("train", "val", "test"):
            x = np.ascontiguousarray(getattr(self, f"x_{split}"), dtype=np.int64)
            y = np.ascontiguousarray(getattr(self, f"y_{split}"), dtype=np.int64)
            lengths = np.ascontiguousarray(getattr(self, f"lengths_{split}"), dtype=np.int64)
            if x.ndim != 2 or y.ndim != 1 or lengths.shape != y.shape or len(x) != len(y):
                raise DataError(
                    f"{self.name}: {split} must be ids (N, T), y (N,) and lengths (N,), but got "
                    f"{x.shape}, {y.shape} and {lengths.shape}."
                )
            if len(x) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
                raise DataError(f"{self.name}: lengths_{split} must be in [1, {x.shape[1]}].")
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", y)
            setattr(self, f"lengths_{split}", lengths)
        if len(self.x_train) == 0 or len(self.x_val) == 0:
            raise DataError(f"{self.name}: the train and val splits must not be empty.")
        self.n_classes = len(self.text["labels"])
        for split in ("train", "val", "test"):
            y = getattr(self, f"y_{split}")
            if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
                raise DataError(f"{self.name}: y_{split} has labels outside [0, {self.n_classes}).")

    @property
    def vocab_size(self) -> int | None:
        return len(self.text["vocab"]["itos"]) if self.text is not None else None

    @property
    def input_size(self) -> int:
        if self.text is not None:
            return 1  # one token id per step; the model's embedding makes the features
        return int(self.x_train.shape[2])

    @property
    def output_size(self) -> int:
        if self.task == "classification":
            assert self.n_classes is not None  # __post_init__ sets it for classification
            return int(self.n_classes)
        return int(self.y_train.shape[1])

    @property
    def window(self) -> int:
        return int(self.x_train.shape[1])

    def naive_val_loss(self) -> float:
        """The val loss of a model that learned nothing, in the units the model's val_loss uses.

        forecasting: MSE of repeating the last observed target value for every horizon step;
        other regression: MSE of always predicting the train mean;
        classification: cross-entropy of predicting the train class frequencies.
        """
        if self.task == "classification":
            counts = np.bincount(self.y_train, minlength=self.output_size).astype(np.float64)
            probs = np.clip(counts / counts.sum(), 1e-12, None)
            return float(-np.mean(np.log(probs[self.y_val])))
        y_val = self.y_val.astype(np.float64)
        if self.meta.get("kind") == "forecasting":
            last = self.x_val[:, -1, self.meta["target_index"]].astype(np.float64)  # (N,)
            return float(np.mean((y_val - last[:, None]) ** 2))
        mean = self.y_train.astype(np.float64).mean(axis=0)  # (K,)
        return float(np.mean((y_val - mean) ** 2))
