"""Every route handler returns its response model (a pydantic model built once in the handler),
not a dict that FastAPI validates into one: the return annotation is the response model.
tests/service/test_results.py calls the handlers and checks what they return."""

from __future__ import annotations

import importlib
import pkgutil
import typing

from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response

from rnntune.service.api import routes as routes_package
from rnntune.service.api.app import create_app
from rnntune.service.config import Settings


def _routes() -> list[APIRoute]:
    found = []
    for info in pkgutil.iter_modules(routes_package.__path__):
        module = importlib.import_module(f"{routes_package.__name__}.{info.name}")
        found += [r for r in module.router.routes if isinstance(r, APIRoute)]
    return found


def test_each_handler_is_annotated_with_its_response_model(sqlite_url):
    routes = _routes()
    published = create_app(Settings(database_url=sqlite_url)).openapi()["paths"]
    assert {(r.path, m.lower()) for r in routes if r.include_in_schema for m in r.methods} == {
        (path, method) for path, ops in published.items() for method in ops
    }  # these are every route the app serves
    for route in routes:
        returns = typing.get_type_hints(route.endpoint)["return"]
        assert isinstance(returns, type), (route.path, returns)
        if issubclass(returns, BaseModel):
            assert route.response_model is returns, route.path  # the annotation, not a response_model= apart
        else:
            assert issubclass(returns, Response) and route.response_model is None, (route.path, returns)
