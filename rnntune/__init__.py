"""rnntune: self-hosted hyperparameter optimisation for recurrent neural networks.

One import name. The sources live in the checkout's top-level folders and install under it:

- ``rnntune.models``  (``models/``): pure PyTorch: sequence models, data sets, ``fit()``, model files;
- ``rnntune.service`` (``service/``): spec, queue, worker, API and CLI around Optuna studies;
- ``rnntune.studies`` (``studies/``): the example specs (package data; ``serve --demo`` reads one).

``import rnntune`` is cheap and never imports torch; the names below load their module on first use::

    from rnntune import load_model
    model = load_model("best.pt")
    model.predict(x)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY = {
    "load_model": "rnntune.models.checkpoint",
    "save_model": "rnntune.models.checkpoint",
    "Predictor": "rnntune.models.checkpoint",
    # your own training code (command trials, objective plugins): torch- and optuna-free
    "report": "rnntune.reporting",
    "final": "rnntune.reporting",
    "params": "rnntune.reporting",
    "TrialPruned": "rnntune.reporting",
}

if TYPE_CHECKING:
    from rnntune.models.checkpoint import Predictor, load_model, save_model
    from rnntune.reporting import TrialPruned, final, params, report

__all__ = ["Predictor", "TrialPruned", "__version__", "final", "load_model", "params", "report", "save_model"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rnntune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
