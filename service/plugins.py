"""Plugins: a user's model, data set or whole training function, installed on a worker.

A plugin is an entry point (the packaging ecosystem's plugin convention) in one of three groups:

- ``rnntune.models``: a factory ``(config: dict) -> torch.nn.Module`` with the built-in model's
  contract: ``(B, T, F)`` floats (or ``(B, T)`` token ids and ``lengths``) in, ``(B, output_size)``
  out (regression values or class logits). ``config`` holds ``input_size``, ``output_size``,
  ``task`` (and ``vocab_size`` / ``embed_dim`` for text) plus every model hyperparameter of the
  trial, fixed in ``model:`` or searched.
- ``rnntune.datasets``: a loader ``(params: dict) -> rnntune.models.SequenceData``.
- ``rnntune.objectives``: a function ``(params: dict, report) -> float``; ``report(step, value)``
  records an intermediate value and raises :class:`rnntune.TrialPruned` when the pruner says so.

A spec names a plugin by its entry-point name only (``model: {plugin: gru-attention}``), never a
module, a callable or a path: what runs is whatever the worker's operator installed under that
name (design.md §7). This module imports neither torch nor optuna.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

GROUPS = {"model": "rnntune.models", "dataset": "rnntune.datasets", "objective": "rnntune.objectives"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class PluginError(Exception):
    """A plugin is missing, does not load, raises, or breaks its contract: the study fails with
    this reason (once), instead of trial after trial."""


def check_name(name: Any) -> str:
    """A spec's plugin reference: an entry-point name, nothing that reads as a module or a path."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"a plugin is named by its entry-point name (lower-case letters, digits, '-', '_'; "
            f"at most 64), never a module, callable or path, but got {name!r}"
        )
    return name


@dataclass(frozen=True)
class PluginInfo:
    kind: str  # model / dataset / objective
    name: str
    distribution: str | None
    version: str | None

    @property
    def key(self) -> str:
        """``group:name``, how a study's requirements and a worker's capabilities name it."""
        return f"{GROUPS[self.kind]}:{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": GROUPS[self.kind],
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
        }


def _entry_point(kind: str, name: str) -> metadata.EntryPoint | None:
    found = metadata.entry_points(group=GROUPS[kind], name=name)
    return next(iter(found), None)


def _info(kind: str, ep: metadata.EntryPoint) -> PluginInfo:
    dist = ep.dist
    return PluginInfo(kind, ep.name, dist.name if dist else None, dist.version if dist else None)


def installed() -> list[PluginInfo]:
    """Every plugin installed in this environment (names a spec may use), sorted."""
    out = []
    for kind, group in GROUPS.items():
        for ep in metadata.entry_points(group=group):
            if NAME_RE.fullmatch(ep.name):  # a name no spec could refer to is not offered
                out.append(_info(kind, ep))
    return sorted(set(out), key=lambda p: (p.kind, p.name))


def info(kind: str, name: str) -> PluginInfo:
    ep = _entry_point(kind, name)
    if ep is None:
        raise PluginError(f"plugin {name!r} is not installed in group {GROUPS[kind]} on this worker")
    return _info(kind, ep)


def load(kind: str, name: str) -> tuple[Any, PluginInfo]:
    """The plugin's callable and where it came from; :class:`PluginError` when it is missing,
    fails to import or is not callable."""
    ep = _entry_point(kind, name)
    if ep is None:
        raise PluginError(f"plugin {name!r} is not installed in group {GROUPS[kind]} on this worker")
    try:
        fn = ep.load()
    except Exception as exc:
        raise PluginError(f"plugin {name!r} ({GROUPS[kind]}) failed to load: {type(exc).__name__}: {exc}") from exc
    if not callable(fn):
        raise PluginError(f"plugin {name!r} ({GROUPS[kind]}) is a {type(fn).__name__}, not a callable")
    return fn, _info(kind, ep)


# --- objective plugins ------------------------------------------------------------------------


def objective_value(value: Any, name: str) -> float:
    """An objective plugin's return value, checked: a real number (NaN/inf fail the trial)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise PluginError(f"objective plugin {name!r} must return a number, but returned a {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"objective plugin {name!r} returned {value!r}, not a number") from exc
