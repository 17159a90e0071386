"""Routing: what a study needs of a worker, and what a worker has.

A study stores its :func:`requirements` (``rnntune_studies.requires``); a worker registers its
:func:`capabilities` (``rnntune_workers``) and claims only the studies it can run (:func:`missing`
is empty). ``service/queue/depth.py`` writes the same rule in SQL for KEDA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rnntune.service import plugins
from rnntune.service.trials.command import script_of

if TYPE_CHECKING:
    from rnntune.service.spec import StudySpec


def requirements(spec: StudySpec) -> dict[str, Any] | None:
    """What a worker needs to run a spec: ``{"plugins": ["group:name", ...], "command": script}``;
    None when it uses built-ins only. Stored with the study; a worker claims only the studies
    whose requirements it meets."""
    names = []
    if spec.model.get("plugin"):  # model: fixed values, or a model plugin's name and its values
        names.append(f"{plugins.GROUPS['model']}:{spec.model['plugin']}")
    if spec.data is not None and spec.data.plugin:
        names.append(f"{plugins.GROUPS['dataset']}:{spec.data.plugin}")
    objective = spec.objective
    if objective is not None and objective.plugin:
        names.append(f"{plugins.GROUPS['objective']}:{objective.plugin}")
    out: dict[str, Any] = {}
    if names:
        out["plugins"] = names
    if objective is not None and objective.command:
        out["command"] = script_of(objective.command)
    return out or None


def missing(requires: dict[str, Any] | None, capabilities: dict[str, Any] | None) -> list[str]:
    """What of ``requires`` a worker with ``capabilities`` lacks (empty: it can run the study)."""
    requires, capabilities = requires or {}, capabilities or {}
    have = {f"{p['group']}:{p['name']}" for p in capabilities.get("plugins", [])}
    out = [f"plugin {key}" for key in requires.get("plugins", []) if key not in have]
    if requires.get("command") and not capabilities.get("commands"):
        out.append("command trials (rnntune worker --allow-commands DIR)")
    return out


def capabilities(*, commands: bool) -> dict[str, Any]:
    """A worker's capabilities, as registered in ``rnntune_workers``."""
    return {"plugins": [p.as_dict() for p in plugins.installed()], "commands": commands}
