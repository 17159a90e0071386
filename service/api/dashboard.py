"""optuna-dashboard inside the API process, reading the same storage, read-only by default.

optuna-dashboard is a WSGI app with root-fixed paths (``/dashboard``, ``/api/...``,
``/static/...``) and no authentication of its own; it also has write routes (notes, deleting
studies). We mount it after our ``/v1`` routes and refuse every method but GET/HEAD unless the
operator opted in with ``RNNTUNE_DASHBOARD_WRITABLE=1``.
"""

from __future__ import annotations

import json

import optuna
import optuna_dashboard
from a2wsgi import WSGIMiddleware

HEALTH_BODY = json.dumps({"status": "ok"}).encode()

READ_METHODS = ("GET", "HEAD", "OPTIONS")


def _read_only(app):
    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET") not in READ_METHODS:
            body = b'{"detail": "the dashboard is read-only (set RNNTUNE_DASHBOARD_WRITABLE=1 to allow writes)"}'
            start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return guarded


def dashboard_app(storage: optuna.storages.BaseStorage, *, writable: bool = False):
    """An ASGI app serving optuna-dashboard for ``storage``."""
    wsgi = optuna_dashboard.wsgi(storage)
    return WSGIMiddleware(wsgi if writable else _read_only(wsgi))


def with_healthz(app):
    """``app`` with a ``GET /healthz`` liveness probe, for the standalone ``rnntune dashboard``:
    its container healthcheck asks it without a token (``TokenAuth`` lets ``/healthz`` through),
    while every dashboard page still needs one."""

    async def probed(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(HEALTH_BODY)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            return await send({"type": "http.response.body", "body": HEALTH_BODY if scope["method"] == "GET" else b""})
        return await app(scope, receive, send)

    return probed
