"""What can be tuned: each hyperparameter's kind, domain and default (the keys of ``models``'
configs), each data set's own options, and the metrics and objectives a study may name."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

from pydantic import (
    BaseModel,
)

from rnntune.models.config import (
    CELLS,
    OPTIMIZERS,
    SCHEDULERS,
    ModelConfig,
    TrainConfig,
)

log = logging.getLogger("rnntune.spec")

# Integers the database stores in 32-bit columns (priority, budget counts); seeds numpy accepts.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1

# ---------------------------------------------------------------------------------------------
# What can be tuned. Each hyperparameter has a kind, a domain and a default used when it is
# neither fixed nor searched. The same names are the keys of ``models`` configs.

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "qmc", "genetic")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
PLUGIN_DATASET = "plugin"  # data.name: plugin, data.plugin: an installed loader (it says the task)
Direction = Literal["minimize", "maximize"]
METRICS: dict[str, Direction] = {
    "val_loss": "minimize",
    "val_mae": "minimize",
    "val_accuracy": "maximize",
    "val_f1": "maximize",
}
# Each data set's own options (``data.params``): an unknown key is a 422 at submit, not a failed
# study in a worker. Checked against ``rnntune.models.data`` by tests/security/test_spec_limits.py.
TEXT_PARAMS = (
    "path",
    "format",
    "text_column",
    "label_column",
    "delimiter",
    "lowercase",
    "min_freq",
    "max_size",
    "max_length",
    "embeddings",
    "embeddings_vocab",
)
DATA_PARAMS: dict[str, tuple[str, ...]] = {
    "sine": ("n_series", "length", "noise", "seed", "period"),
    "adding": ("n_samples", "length", "seed"),
    "sunspots": ("period",),
    "co2": ("frequency", "period"),
    "digits": (),
    "csv": ("path", "delimiter", "target", "period"),
    "npz": ("path", "scale"),
    "text": TEXT_PARAMS,
}
# What each option holds: ("int", low) | ("number", low) | ("bool",) | ("char",) (one character)
# | ("name",) (a non-empty string) | ("ref",) (an upload's name or id, or a path) | ("choice", ...).
# None is accepted where the loader's default is None.
DATA_PARAM_KINDS: dict[str, tuple] = {
    "n_series": ("int", 3),
    "n_samples": ("int", 3),
    "length": ("int", 2),
    "seed": ("int", None),
    "noise": ("number", 0),
    "period": ("int", 1),  # forecasting: the season length in steps (the seasonal-naive baseline's)
    "frequency": ("choice", "monthly", "weekly"),
    "path": ("name",),
    "target": ("name",),
    "delimiter": ("char",),
    "scale": ("bool",),
    "format": ("choice", None, "csv", "jsonl"),
    "text_column": ("name",),
    "label_column": ("name",),
    "lowercase": ("bool",),
    "min_freq": ("int", 1),
    "max_size": ("int", 1),
    "max_length": ("int", 1),
    "embeddings": ("ref",),
    "embeddings_vocab": ("ref",),
}
NULLABLE_PARAMS = ("max_size", "max_length", "embeddings", "embeddings_vocab", "format", "period")


def _check_data_param(key: str, value: Any) -> None:
    """Raise ValueError("params.<key>: ...") when ``value`` is not what the loader takes."""
    kind, *args = DATA_PARAM_KINDS[key]
    if value is None and key in NULLABLE_PARAMS:
        return
    where = f"params.{key}"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or (args[0] is not None and value < args[0]):
            low = "" if args[0] is None else f" >= {args[0]}"
            raise ValueError(f"{where}: must be an integer{low}, but got {value!r}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= args[0]:
            raise ValueError(f"{where}: must be a number >= {args[0]}, but got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: must be true or false, but got {value!r}")
    elif kind == "char":
        if not isinstance(value, str) or len(value) != 1:
            raise ValueError(f"{where}: must be one character, but got {value!r}")
    elif kind == "name":
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: must be a non-empty string, but got {value!r}")
    elif kind == "ref":
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise ValueError(f"{where}: must name an uploaded file (name or id) or a path, but got {value!r}")
    elif value not in args:
        raise ValueError(f"{where}: must be one of {[a for a in args if a is not None]}, but got {value!r}")


# Width of each built-in data set's input (features per step); file data sets vary.
BUILTIN_FEATURES = {"sine": 1, "adding": 2, "sunspots": 1, "co2": 1, "digits": 8}

# What ``objectives`` may list: the val metrics (reported every epoch) and two costs of the trained
# model, measured once at the end: its parameter count and its batch-1 inference time.
OBJECTIVES: dict[str, Direction] = {**METRICS, "n_params": "minimize", "latency_ms": "minimize"}


class _Hp(BaseModel):
    kind: Literal["int", "float", "bool", "str"]
    group: Literal["model", "training", "data"]
    default: Any = None  # model / training: set from the config field below
    choices: tuple | None = None
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive unless high_open
    high_open: bool = False


def _config_defaults(table: dict[str, _Hp]) -> dict[str, _Hp]:
    """A model or training hyperparameter is the ``ModelConfig`` / ``TrainConfig`` field of its
    name, and its default is that field's (read from the dataclasses, so it is written once),
    unless the table gives the spec's own (``highway``: on for forecasting data)."""
    fields = {f.name: f for config in (ModelConfig, TrainConfig) for f in dataclasses.fields(config)}
    out = {}
    for name, hp in table.items():
        if hp.group != "data":
            if name not in fields or fields[name].default is dataclasses.MISSING:
                raise TypeError(f"hyperparameter {name!r} is not a ModelConfig / TrainConfig field with a default")
            if "default" not in hp.model_fields_set:  # set here only where the spec's default differs
                hp = hp.model_copy(update={"default": fields[name].default})
        out[name] = hp
    return out


HYPERPARAMETERS: dict[str, _Hp] = _config_defaults(
    {
        "cell": _Hp(kind="str", group="model", choices=CELLS),
        "hidden_size": _Hp(kind="int", group="model", low=1, high=4096),
        "num_layers": _Hp(kind="int", group="model", low=1, high=16),
        "bidirectional": _Hp(kind="bool", group="model"),
        "dropout": _Hp(kind="float", group="model", low=0.0, high=1.0, high_open=True),
        # forecasting only: LSTNet's linear skip over the target's last highway_window steps
        # on by default (the model library's ModelConfig keeps it off): benchmarks/highway.py
        "highway": _Hp(kind="bool", group="model", default=True),
        "highway_window": _Hp(kind="int", group="model", low=1, high=100000),
        "optimizer": _Hp(kind="str", group="training", choices=OPTIMIZERS),
        "lr": _Hp(kind="float", group="training", low=1e-8, high=10.0),
        "momentum": _Hp(kind="float", group="training", low=0.0, high=1.0, high_open=True),
        "nesterov": _Hp(kind="bool", group="training"),
        "weight_decay": _Hp(kind="float", group="training", low=0.0, high=1.0),
        "batch_size": _Hp(kind="int", group="training", low=1, high=65536),
        "clip_norm": _Hp(kind="float", group="training", low=1e-6, high=1e6),
        "scheduler": _Hp(kind="str", group="training", choices=SCHEDULERS),
        "patience": _Hp(kind="int", group="training", low=1, high=10000),
        "window": _Hp(kind="int", group="data", default=None, low=1, high=100000),  # None: the data set's
        # text only (data.name: text)
        "embed_dim": _Hp(kind="int", group="model", low=1, high=4096),  # None: 64, or the matrix's width
        "freeze_embeddings": _Hp(kind="bool", group="model"),
        "max_length": _Hp(kind="int", group="data", default=None, low=1, high=1_000_000),  # tokens kept
    }
)
TEXT_ONLY = ("embed_dim", "freeze_embeddings", "max_length")


def _check_value(name: str, value: Any) -> Any:
    """Check one value against a hyperparameter's domain; return it (bool/int/float coerced)."""
    hp = HYPERPARAMETERS[name]
    if value is None and hp.default is None:
        return None
    if hp.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, but got {value!r}")
        return value
    if hp.kind == "str":
        choices = hp.choices or ()
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, but got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, but got {value!r}")
    if hp.kind == "int" and float(value) != int(value):
        raise ValueError(f"{name} must be an integer, but got {value!r}")
    value = int(value) if hp.kind == "int" else float(value)
    too_high = value >= hp.high if hp.high_open else value > hp.high
    if value < hp.low or too_high:
        bracket = ")" if hp.high_open else "]"
        raise ValueError(f"{name} must be in [{hp.low:g}, {hp.high:g}{bracket}, but got {value!r}")
    return value
