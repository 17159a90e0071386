"""The HTTP API: ``create_app(settings)`` builds it; ``rnntune api`` / ``serve`` run it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from optuna.storages import RDBStorage
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import compile_path

from rnntune.service import __version__, queue
from rnntune.service.api.dashboard import dashboard_app
from rnntune.service.api.routes import datasets, health, metrics, plugins, results, studies, study_ops, workers
from rnntune.service.api.security import BodyLimit, BrowserGuard, TokenAuth, allowed_hosts, is_dashboard_path
from rnntune.service.config import Settings
from rnntune.service.spec import BrokenSpec
from rnntune.service.store.db import init_db, make_engine, make_storage, session_factory

log = logging.getLogger("rnntune.api")
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(settings: Settings, *, dashboard: bool = True, bind_host: str | None = None) -> FastAPI:
    """``bind_host``: the address the server listens on; bound to loopback (and without
    ``RNNTUNE_ALLOWED_HOSTS``), only loopback ``Host`` names are answered. None (in-process
    clients, tests): any ``Host``."""
    engine = make_engine(settings)
    init_db(engine)
    storage = make_storage(settings)
    sessions = session_factory(engine)
    app = FastAPI(
        title="rnntune",
        version=__version__,
        summary="Hyperparameter optimisation for recurrent neural networks",
        description="Submit a study spec; workers train RNN/LSTM/GRU models and Optuna searches and prunes. "
        "The dashboard is at /dashboard.",
        lifespan=_lifespan(settings, engine, storage, sessions),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.storage = storage
    _include_routers(app, dashboard)
    _add_exception_handlers(app)
    _add_spec_schema(app, secured=bool(settings.tokens))
    if dashboard:
        app.mount("/", _api_methods_first(app, dashboard_app(storage, writable=settings.dashboard_writable)))
    _add_middleware(app, settings, bind_host)
    return app


def _lifespan(settings: Settings, engine: Engine, storage: RDBStorage, sessions: sessionmaker) -> Lifespan:
    """While the app runs, a task requeues expired leases; on shutdown, the connections close."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(
            _requeue_expired_forever(
                sessions, period_s=min(settings.lease_s / 3, 15.0), max_retries=settings.max_retries
            )
        )
        yield
        sweeper.cancel()
        engine.dispose()
        storage.remove_session()

    return lifespan


def _include_routers(app: FastAPI, dashboard: bool) -> None:
    """The /v1 routes, health and metrics; ``/`` redirects to the dashboard (or the API docs)."""
    for routes in (health, studies, study_ops, results, datasets, workers, plugins, metrics):
        app.include_router(routes.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard" if dashboard else "/docs")


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """As FastAPI's, but a 405 lists every method the path accepts in Allow (Starlette names
        only the first matching route's)."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods = {
                method.upper()
                for template, ops in app.openapi()["paths"].items()
                if compile_path(template)[0].match(request.url.path)
                for method in ops
            }
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(BrokenSpec)
    async def _broken_spec(request: Request, exc: BrokenSpec) -> JSONResponse:
        """A study whose stored spec no longer parses (lists and details show it with the
        reason): what needs its spec answers 409 with that reason."""
        return JSONResponse({"detail": str(exc)}, status_code=409)


def _add_middleware(app: FastAPI, settings: Settings, bind_host: str | None) -> None:
    """Body limits, the browser guard, tokens and allowed hosts (the last added runs first)."""
    app.add_middleware(
        BodyLimit,
        default=(settings.max_body_kb * 1024, f"body limit RNNTUNE_MAX_BODY_KB={settings.max_body_kb}"),
        limits={
            "/v1/datasets": (
                int(settings.max_upload_mb * 2**20),
                f"upload limit RNNTUNE_MAX_UPLOAD_MB={settings.max_upload_mb:g}",
            )
        },
    )
    app.add_middleware(BrowserGuard)  # cross-site writes, form bodies, TRACE & co.
    if settings.tokens:
        # nothing else runs unauthenticated; read tokens write nothing (owners enforced)
        app.add_middleware(TokenAuth, tokens=settings.tokens, enforce_roles=settings.owners_enforced)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings.allowed_hosts, bind_host))


def _api_methods_first(app: FastAPI, dashboard):
    """The dashboard is mounted at "/" (its paths are root-fixed), so it would answer any method
    our routes do not take (``PUT /healthz``). Such a request gets our 405 instead."""

    ours: list = []  # our paths' regexes, compiled on first use (the OpenAPI schema is built once)

    async def mounted(scope, receive, send):
        path = scope["path"]
        if scope["type"] == "http" and not is_dashboard_path(path):
            if not ours:
                ours.extend(compile_path(template)[0] for template in app.openapi()["paths"])
            if any(regex.match(path) for regex in ours):
                raise StarletteHTTPException(405)
        await dashboard(scope, receive, send)

    return mounted


async def _requeue_expired_forever(sessions, *, period_s: float, max_retries: int) -> None:
    """The API, too, hands back tickets whose worker died, even when no worker is claiming."""
    while True:
        await asyncio.sleep(period_s)
        try:
            n = await run_in_threadpool(_requeue, sessions, max_retries)
            if n:
                log.info("requeued %d tickets whose lease expired", n)
        except SQLAlchemyError as exc:
            log.warning("requeue of expired leases failed: %s", type(exc).__name__)
        except Exception:  # the sweep must outlive anything one pass meets
            log.exception("requeue of expired leases failed")


def _requeue(sessions, max_retries: int) -> int:
    with sessions() as session:
        return queue.requeue_expired_now(session, max_retries=max_retries)


def _add_spec_schema(app: FastAPI, *, secured: bool) -> None:
    """The study-spec body is parsed by hand (JSON or YAML); publish its schema all the same."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(studies.spec_schema_components())
            problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for path, ops in schema["paths"].items():
                for method, op in ops.items():
                    if method in ("post", "put", "patch"):
                        op["responses"].setdefault(
                            "413", {"description": "request body over the limit", "content": problem}
                        )
                    if method in ("post", "put", "patch", "delete"):
                        op["responses"].setdefault(
                            "403", {"description": "a cross-site request (Origin / Sec-Fetch-Site)", "content": problem}
                        )
                        op["responses"].setdefault(
                            "415",
                            {"description": "a body that is not JSON or YAML (multipart: uploads)", "content": problem},
                        )
                    if secured and path not in ("/healthz", "/readyz"):
                        op["responses"].setdefault(
                            "401", {"description": "missing or invalid API token", "content": problem}
                        )
            if secured:
                components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"bearerAuth": []}]
                for path in ("/healthz", "/readyz"):
                    for op in schema["paths"].get(path, {}).values():
                        op["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend the schema it builds
