"""rnntune service: spec, queue, worker, API and CLI around Optuna studies of recurrent models."""

from rnntune import __version__

__all__ = ["__version__"]
