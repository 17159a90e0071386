"""GET /metrics: Prometheus exposition, computed from the database at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rnntune.service.reports.metrics import registry_for

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Trials by study and state, queue depth, live workers, trial and epoch durations, epochs
    saved by pruning (Prometheus text format; see service/reports/metrics.py)."""
    state = request.app.state
    registry = getattr(state, "metrics_registry", None)
    if registry is None:
        registry = state.metrics_registry = registry_for(state.sessions)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
