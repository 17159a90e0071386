"""/v1/plugins: the plugins the live workers have installed, and how many run command trials."""

from __future__ import annotations

from fastapi import APIRouter

from rnntune.service import queue
from rnntune.service.api.deps import SessionDep, SettingsDep
from rnntune.service.api.schemas import PluginAvailable, PluginList

router = APIRouter(prefix="/v1/plugins", tags=["plugins"])


@router.get("")
def list_plugins(session: SessionDep, settings: SettingsDep) -> PluginList:
    """Plugins a spec may name (model, data set, objective), each with its distribution, version
    and the number of live workers that have it; and the live workers that run command trials."""
    live = queue.live_capabilities(session, lost_after_s=settings.lease_s)
    found: dict[tuple, dict] = {}
    for caps in live:
        for p in caps.get("plugins", []):
            key = (p["group"], p["name"], p.get("distribution"), p.get("version"))
            entry = found.setdefault(key, {**p, "workers": 0})
            entry["workers"] += 1
    items = sorted(found.values(), key=lambda p: (p["group"], p["name"], p.get("version") or ""))
    return PluginList(
        items=[PluginAvailable.model_validate(p) for p in items],
        command_workers=sum(1 for caps in live if caps.get("commands")),
        workers=len(live),
    )
