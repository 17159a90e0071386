"""rnntune service: spec, queue, worker, API and CLI around Optuna studies of recurrent models."""

__version__ = "0.1.0"
