"""rnntune models: recurrent sequence models, data sets and training, in pure PyTorch.

This package never imports optuna or the service; the tuner plugs in through fit()'s
on_epoch_end callback.

``import rnntune.models`` never imports torch: each name below loads its module on first use
(PEP 562), and the allowed values and configs (``rnntune.models.config``) and the data sets
(``rnntune.models.data``, numpy only) import without it. So the API checks specs against the same
lists the models use, and pays for torch only where it trains or loads a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module that defines it; imported on first attribute access.
_LAZY = {
    "BUILTIN_DATASETS": "rnntune.models.config",
    "CELLS": "rnntune.models.config",
    "OPTIMIZERS": "rnntune.models.config",
    "SCHEDULERS": "rnntune.models.config",
    "TASKS": "rnntune.models.config",
    "ModelConfig": "rnntune.models.config",
    "TrainConfig": "rnntune.models.config",
    "DataError": "rnntune.models.data",
    "SequenceData": "rnntune.models.data",
    "load_dataset": "rnntune.models.data",
    "SequenceModel": "rnntune.models.recurrent",
    "TOKEN_PATTERN": "rnntune.models.text",
    "Vocab": "rnntune.models.text",
    "bucket_batches": "rnntune.models.text",
    "tokenize": "rnntune.models.text",
    "DivergedError": "rnntune.models.train",
    "EpochResult": "rnntune.models.train",
    "FitResult": "rnntune.models.train",
    "TrainingStopped": "rnntune.models.train",
    "evaluate": "rnntune.models.evaluation",
    "fit": "rnntune.models.train",
    "pick_device": "rnntune.models.train",
    "Predictor": "rnntune.models.checkpoint",
    "load_model": "rnntune.models.checkpoint",
    "save_model": "rnntune.models.checkpoint",
}

if TYPE_CHECKING:
    from rnntune.models.checkpoint import Predictor, load_model, save_model
    from rnntune.models.config import (
        BUILTIN_DATASETS,
        CELLS,
        OPTIMIZERS,
        SCHEDULERS,
        TASKS,
        ModelConfig,
        TrainConfig,
    )
    from rnntune.models.data import DataError, SequenceData, load_dataset
    from rnntune.models.evaluation import evaluate
    from rnntune.models.recurrent import SequenceModel
    from rnntune.models.text import TOKEN_PATTERN, Vocab, bucket_batches, tokenize
    from rnntune.models.train import (
        DivergedError,
        EpochResult,
        FitResult,
        TrainingStopped,
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rnntune.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
