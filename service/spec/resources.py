"""What a spec would ask of a worker, bounded before anything is built from it: trials, epochs,
model size, batch and data elements, classes, vocabulary, text length (``RNNTUNE_MAX_*``).
Each refusal names the field, the value and the setting."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rnntune.service.space import (
    CategoricalParam,
)
from rnntune.service.spec.hyperparameters import BUILTIN_FEATURES
from rnntune.service.spec.limits import Limits
from rnntune.service.spec.sections import DataSpec

if TYPE_CHECKING:
    from rnntune.service.spec.study import StudySpec

log = logging.getLogger("rnntune.spec")

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
HIGHWAYLESS = ("adding", "digits", "npz", "text")  # not forecasting: build_configs adds no highway


def _upper(spec: StudySpec, name: str) -> Any:
    """The largest value a hyperparameter can take in this spec (searched: its upper bound)."""
    param = spec.search_space.get(name)
    if param is None:
        return spec.fixed_params()[name]
    if isinstance(param, CategoricalParam):
        if name == "cell":
            return max(param.choices, key=lambda c: _GATES.get(str(c), 0))
        values = [c for c in param.choices if c is not None]
        return max(values) if values else None
    return param.high


def _data(spec: StudySpec) -> DataSpec:
    """The spec's data: what is sized here is rnntune's own training, which always has data."""
    assert spec.data is not None  # only an objective plugin or command has none, and sizes nothing here
    return spec.data


def _n_features(spec: StudySpec) -> int:
    """Input width per step, as far as the spec tells (a file's own width is checked on upload)."""
    d = _data(spec)
    if d.name in BUILTIN_FEATURES:
        return BUILTIN_FEATURES[d.name]
    if d.name == "csv":
        return len({*(d.inputs or []), d.target or d.params.get("target")})
    if d.name == "text":
        return _upper(spec, "embed_dim") or 64
    return 1


def _window_upper(spec: StudySpec, limits: Limits | None = None) -> int | None:
    """The longest sequence a trial feeds the model, when the spec tells (None: the file's)."""
    d = _data(spec)
    if d.name == "text":  # unset: the loader keeps RNNTUNE_MAX_TEXT_LENGTH tokens
        return _upper(spec, "max_length") or d.params.get("max_length") or (limits or Limits()).max_text_length
    if "window" in spec.search_space:
        return _upper(spec, "window")
    if d.window is not None:
        return d.window
    length = d.params.get("length")
    if d.name == "adding":
        return length if isinstance(length, int) else 50
    if d.name == "digits":
        return 8
    if d.name == "sine":
        return min(48, length) if isinstance(length, int) else 48
    return {"sunspots": 24, "co2": 52, "csv": 24}.get(d.name)  # the loaders' defaults (at most); npz: its T


def _n_outputs(spec: StudySpec, limits: Limits) -> int:
    """The head's width: forecasting horizon x targets, the classes, or (a file the spec cannot
    see into: a path's .npz, a text file's labels) the most classes this server allows."""
    d = _data(spec)
    if d.name == "digits":
        return 10
    if d.name in ("sine", "sunspots", "co2", "csv"):
        return d.horizon
    if d.name in ("npz", "text"):
        return limits.max_classes
    return 1  # adding, and a data-set plugin's own


def _vocab_upper(spec: StudySpec, limits: Limits) -> int:
    """Rows of a text model's embedding: the vocabulary's cap plus <pad> and <unk>."""
    return min(_data(spec).params.get("max_size") or limits.max_vocab, limits.max_vocab) + 2


def model_params_upper(
    spec: StudySpec, n_features: int | None = None, n_outputs: int | None = None, limits: Limits | None = None
) -> int:
    """Parameters of the largest model the spec can build (every size at its upper bound): a text
    model's embedding (vocabulary x embed_dim), the recurrent layers and the head its outputs
    imply. ``n_features`` / ``n_outputs``: the input width and head width when known from the
    file (an uploaded .npz)."""
    limits = limits or Limits()
    hidden, layers = int(_upper(spec, "hidden_size")), int(_upper(spec, "num_layers"))
    directions = 2 if _upper(spec, "bidirectional") else 1
    gates = _GATES[_upper(spec, "cell")]
    n, width = 0, n_features or _n_features(spec)
    if _data(spec).name == "text":
        n += _vocab_upper(spec, limits) * width  # the embedding; width is embed_dim
    for _ in range(layers):  # per layer and direction: gates x (W_ih, W_hh, two biases)
        n += directions * gates * (hidden * (width + hidden) + 2 * hidden)
        width = hidden * directions
    outputs = n_outputs or _n_outputs(spec, limits)
    if _upper(spec, "highway") and _data(spec).name not in HIGHWAYLESS:  # highway_window weights per output
        n += int(_upper(spec, "highway_window")) * outputs + outputs
    return n + width * outputs + outputs  # + the head


def _check_text_caps(spec: StudySpec, limits: Limits) -> None:
    """A text spec's vocabulary and kept length within RNNTUNE_MAX_VOCAB / RNNTUNE_MAX_TEXT_LENGTH."""
    d = _data(spec)
    if d.name != "text":
        return
    size = d.params.get("max_size")
    if size is not None and size > limits.max_vocab:
        raise ValueError(
            f"data.params.max_size: {size} is over this server's limit RNNTUNE_MAX_VOCAB={limits.max_vocab}"
        )
    searched = "max_length" in spec.search_space
    length = _upper(spec, "max_length") if searched else d.params.get("max_length")
    if length is not None and length > limits.max_text_length:
        where = "search_space.max_length" if searched else "data.params.max_length"
        raise ValueError(
            f"{where}: {length} tokens is over this server's limit RNNTUNE_MAX_TEXT_LENGTH={limits.max_text_length}"
        )


def _generated_elements(spec: StudySpec, window: int | None) -> tuple[str, int] | None:
    """(field, values) a built-in generator would make, windows included; None for other data."""
    d = _data(spec)
    p, name = d.params, d.name
    sizes = {"sine": ("n_series", 500, "length", 60), "adding": ("n_samples", 3000, "length", 50)}
    if name not in sizes:
        return None
    count_key, count_default, length_key, length_default = sizes[name]
    count, length = p.get(count_key, count_default), p.get(length_key, length_default)
    for key, value in ((count_key, count), (length_key, length)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"data.params.{key}: must be an integer, but got {value!r}")
    if name == "adding":
        return f"data.params.{count_key}", count * length * 2
    return f"data.params.{count_key}", count * length * (1 + min(window or length, length))


def check_limits(
    spec: StudySpec,
    limits: Limits,
    *,
    n_features: int | None = None,
    window: int | None = None,
    n_outputs: int | None = None,
) -> None:
    """Raise ValueError ("field: value ... limit RNNTUNE_MAX_...") for the first breach.

    ``n_features`` / ``window``: an uploaded file's own input width and length, where the spec
    alone cannot tell them (``datasets.check_spec`` passes an .npz's)."""
    assert spec.budget.n_trials is not None  # validation sets it before the server's checks run
    if spec.budget.n_trials > limits.max_trials_per_study:
        raise ValueError(
            f"budget.n_trials: {spec.budget.n_trials} exceeds this server's limit "
            f"RNNTUNE_MAX_TRIALS_PER_STUDY={limits.max_trials_per_study}"
        )
    if spec.budget.max_epochs > limits.max_epochs_per_trial:
        raise ValueError(
            f"budget.max_epochs: {spec.budget.max_epochs} exceeds this server's limit "
            f"RNNTUNE_MAX_EPOCHS_PER_TRIAL={limits.max_epochs_per_trial}"
        )
    for section in ("sampler", "pruner"):
        for key, value in getattr(spec, section).options.items():
            _check_option(f"{section}.{key}", value, limits.max_search_option)
    if spec.objective is not None:
        return  # the user's own training: no model or data of rnntune's to size
    _check_text_caps(spec, limits)
    n_params = model_params_upper(spec, n_features, n_outputs, limits)
    if n_params > limits.max_model_params:
        sizes = (
            ("embed_dim", "hidden_size", "num_layers") if _data(spec).name == "text" else ("hidden_size", "num_layers")
        )
        where = next((f"search_space.{k}" for k in sizes if k in spec.search_space), "model")
        raise ValueError(
            f"{where}: the largest model this spec can build has {n_params} parameters, over this server's "
            f"limit RNNTUNE_MAX_MODEL_PARAMS={limits.max_model_params}"
        )
    window = window or _window_upper(spec, limits)
    if window is not None:
        batch = int(_upper(spec, "batch_size"))
        hidden = int(_upper(spec, "hidden_size")) * (2 if _upper(spec, "bidirectional") else 1)
        width = max(n_features or _n_features(spec), hidden)
        n = batch * int(window) * width
        if n > limits.max_batch_elements:
            where = "search_space.batch_size" if "batch_size" in spec.search_space else "training.batch_size"
            raise ValueError(
                f"{where}: batch {batch} x window {window} x width {width} = {n} values, over this "
                f"server's limit RNNTUNE_MAX_BATCH_ELEMENTS={limits.max_batch_elements}"
            )
    generated = _generated_elements(spec, window)
    if generated is not None and generated[1] > limits.max_data_elements:
        raise ValueError(
            f"{generated[0]}: the generated data holds {generated[1]} values, over this server's limit "
            f"RNNTUNE_MAX_DATA_ELEMENTS={limits.max_data_elements}"
        )


def _check_option(where: str, value: Any, limit: int) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_option(f"{where}.{key}", item, limit)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_option(f"{where}[{i}]", item, limit)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > limit:
        raise ValueError(f"{where}: {value!r} exceeds this server's limit RNNTUNE_MAX_SEARCH_OPTION={limit}")
