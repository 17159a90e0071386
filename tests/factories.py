"""Study specs for tests, built from one place: a preset (a plain dict a test may read) changed
section by section, so a test shows only what it is about."""

from __future__ import annotations

import copy

# The smallest valid spec: one sine trial, every other section at its default.
MINIMAL = {"name": "t", "data": {"name": "sine"}, "budget": {"n_trials": 1}}


def study_spec(base: dict | None = None, **changes) -> dict:
    """A deep copy of ``base`` (default :data:`MINIMAL`) with ``changes`` applied: ``section=value``
    replaces a top-level section, ``section__key=value`` sets one key inside it (created if absent)."""
    out = copy.deepcopy(MINIMAL if base is None else base)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = out
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def sine_study(name: str, *, n_trials: int, max_epochs: int = 3, n_series: int = 60, hidden: int = 8, **extra) -> dict:
    """A small trainable sine study whose epoch length scales with ``n_series``; a dict in ``extra``
    updates that section's keys (``search_space`` is replaced whole), anything else replaces it."""
    out = {
        "name": name,
        "data": {"name": "sine", "params": {"n_series": n_series, "length": 60, "seed": 0}, "window": 48},
        "model": {"cell": "lstm", "hidden_size": hidden},
        "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials, "max_epochs": max_epochs},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "search_space":
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
