"""The HTTP API: ``create_app(settings)`` builds it; ``rnntune api`` / ``serve`` run it."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from service import __version__
from service.api.dashboard import dashboard_app
from service.api.routes import health, studies
from service.config import Settings
from service.db import init_db, make_engine, make_storage, session_factory


def create_app(settings: Settings, *, dashboard: bool = True) -> FastAPI:
    engine = make_engine(settings)
    init_db(engine)
    storage = make_storage(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine.dispose()
        storage.remove_session()

    app = FastAPI(
        title="rnntune",
        version=__version__,
        summary="Hyperparameter optimisation for recurrent neural networks",
        description="Submit a study spec; workers train RNN/LSTM/GRU models and Optuna searches and prunes. "
        "The dashboard is at /dashboard.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.storage = storage
    app.include_router(health.router)
    app.include_router(studies.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard" if dashboard else "/docs")

    _add_spec_schema(app)
    if dashboard:
        app.mount("/", dashboard_app(storage, writable=settings.dashboard_writable))
    return app


def _add_spec_schema(app: FastAPI) -> None:
    """The study-spec body is parsed by hand (JSON or YAML); publish its schema all the same."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(studies.spec_schema_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
