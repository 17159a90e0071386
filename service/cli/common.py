"""What every ``rnntune`` command shares: the settings, the error exit, logging, the common options."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from rnntune.service import logs
from rnntune.service.config import Settings
from rnntune.service.spec import SpecError, StudySpec, load_spec

DbOpt = Annotated[str | None, typer.Option("--database-url", envvar="RNNTUNE_DATABASE_URL", help="SQLAlchemy URL")]
InsecureOpt = Annotated[bool, typer.Option(help="allow a non-loopback address without RNNTUNE_API_TOKENS")]
ApiOpt = Annotated[str | None, typer.Option("--api-url", envvar="RNNTUNE_API_URL", help="the rnntune API")]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command: ``error: MESSAGE`` on stderr, exit status ``code`` (2: bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def echo_lines(lines: Iterable[str]) -> None:
    for line in lines:
        typer.echo(line)


def load_settings(database_url: str | None = None) -> Settings:
    """The settings from the environment (and ``.env``), ``database_url`` over theirs when given."""
    try:
        return Settings(database_url=database_url) if database_url else Settings()
    except ValueError as exc:
        fail(f"settings: {exc}", code=2)


def setup_logging(level: str = "INFO") -> None:
    logs.setup(level)  # RNNTUNE_LOG_JSON=1 (or --log-json): one JSON object per line


def uvicorn_logging() -> dict[str, Any]:
    """In JSON mode uvicorn configures no handlers of its own: its lines go through ours."""
    return {"log_config": None} if logs.json_wanted() else {}


def load_spec_file(path: Path) -> StudySpec:
    """The spec in ``path``, or exit 2 naming what is wrong with it."""
    try:
        return load_spec(path)
    except SpecError as exc:
        fail(f"{path}: {exc}", code=2)
