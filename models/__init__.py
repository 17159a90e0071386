"""rnntune models: recurrent sequence models, data sets and training, in pure PyTorch.

This package never imports optuna or the service; the tuner plugs in through fit()'s
on_epoch_end callback.
"""

from rnntune.models.checkpoint import Predictor, load_model, save_model
from rnntune.models.data import BUILTIN_DATASETS, DataError, SequenceData, load_dataset
from rnntune.models.recurrent import CELLS, TASKS, ModelConfig, SequenceModel
from rnntune.models.text import TOKEN_PATTERN, Vocab, bucket_batches, tokenize
from rnntune.models.train import (
    OPTIMIZERS,
    SCHEDULERS,
    DivergedError,
    EpochResult,
    FitResult,
    TrainConfig,
    TrainingStopped,
    evaluate,
    fit,
    pick_device,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CELLS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TASKS",
    "DataError",
    "DivergedError",
    "EpochResult",
    "FitResult",
    "ModelConfig",
    "Predictor",
    "SequenceData",
    "SequenceModel",
    "TOKEN_PATTERN",
    "TrainConfig",
    "TrainingStopped",
    "Vocab",
    "bucket_batches",
    "evaluate",
    "fit",
    "load_dataset",
    "load_model",
    "pick_device",
    "save_model",
    "tokenize",
]
