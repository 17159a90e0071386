"""Rules on single values that read no whole spec: names, a hyperparameter's schema and domain, a
value against a searched parameter, a model plugin's fixed values, a plugin's or command's own
parameter names."""

from __future__ import annotations

import re
from typing import Any

from rnntune.service import plugins
from rnntune.service.space import (
    CategoricalParam,
    FloatParam,
    Param,
)
from rnntune.service.spec.hyperparameters import (
    HYPERPARAMETERS,
    _check_value,
    _Hp,
)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # names are matched with fullmatch: no trailing "\n"


def _hp_schema(hp: _Hp) -> dict[str, Any]:
    """One hyperparameter's domain as JSON Schema (what the validators above enforce), and the
    value a study trains with when the spec neither fixes nor searches it."""
    if hp.kind == "bool":
        return {"type": "boolean", "default": hp.default}
    if hp.kind == "str":
        return {"type": "string", "enum": list(hp.choices or ()), "default": hp.default}
    cast = int if hp.kind == "int" else float
    assert hp.low is not None and hp.high is not None  # a number's domain has both bounds
    out: dict[str, Any] = {"type": "integer" if hp.kind == "int" else "number", "minimum": cast(hp.low)}
    out["exclusiveMaximum" if hp.high_open else "maximum"] = cast(hp.high)
    if hp.default is None:
        return {"anyOf": [out, {"type": "null"}], "default": None}
    return {**out, "default": hp.default}


def _fixed_schema(schema: dict[str, Any], group: str) -> None:
    """The OpenAPI schema of ``model`` / ``training``: each known hyperparameter's type and bounds,
    so clients (and schemathesis) generate values the API accepts."""
    schema["properties"] = {name: _hp_schema(hp) for name, hp in HYPERPARAMETERS.items() if hp.group == group}
    if group == "model":  # or an installed model plugin, by its entry-point name
        schema["properties"]["plugin"] = {"type": "string", "pattern": plugins.NAME_RE.pattern}


CUSTOM_METRIC_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # an objective plugin's or command's value

CUSTOM_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _plugin_model(values: dict[str, Any]) -> dict[str, Any]:
    """``model: {plugin: NAME, ...}``: the other keys are the plugin's fixed parameters."""
    try:
        plugins.check_name(values["plugin"])
    except ValueError as exc:
        raise ValueError(f"plugin: {exc}") from None
    for key, value in values.items():
        if not CUSTOM_PARAM_RE.fullmatch(key):
            raise ValueError(f"{key!r}: a model plugin's parameter is a plain identifier")
        if key != "plugin" and not isinstance(value, (bool, int, float, str, type(None))):
            raise ValueError(f"{key}: a model plugin's fixed parameter is a number, string or boolean")
    return dict(values)


def _custom_names(fields: dict[str, Any]):
    """For search_space validation: a predicate for the names that belong to a plugin or a
    command rather than to rnntune (None: built-in training, every name must be known)."""
    if fields.get("objective") is not None:
        return lambda name: True  # the user's code: every parameter is its own
    if "plugin" in (fields.get("model") or {}):
        # a model plugin: rnntune still trains (training and data parameters keep their
        # domains); the model's parameters, known names or new ones, are the plugin's
        return lambda name: name not in HYPERPARAMETERS or HYPERPARAMETERS[name].group == "model"
    return None


def _check_param_domain(name: str, hp: _Hp, param: Param) -> None:
    if isinstance(param, CategoricalParam):
        for choice in param.choices:
            _check_value(name, choice)
        return
    if hp.kind in ("str", "bool"):
        raise ValueError(f"{hp.kind} parameter: use type categorical with choices")
    if hp.kind == "int" and isinstance(param, FloatParam):
        raise ValueError("integer parameter: use type int (or categorical)")
    _check_value(name, param.low)
    _check_value(name, param.high)


def _check_choice(where: str, param: Param, value: Any) -> None:
    if isinstance(param, CategoricalParam):
        if value not in param.choices:
            raise ValueError(f"{where}: {value!r} is not one of {param.choices}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not param.low <= value <= param.high:
        raise ValueError(f"{where}: {value!r} is outside [{param.low}, {param.high}]")
