"""The service's processes: ``serve`` (API, dashboard and local workers, which it starts and
stops), ``api``, ``dashboard`` and ``migrate``; and the local worker processes ``serve`` and
``worker --per-gpu`` supervise.

uvicorn, the app, the database and the worker (torch) are imported by the command that needs
them: the client commands, which share this package's start-up, never pay for them.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rnntune.service.cli.common import DbOpt, InsecureOpt, fail, load_settings, setup_logging, uvicorn_logging
from rnntune.service.config import Settings, mask_url
from rnntune.service.spec import load_spec

# The example specs are package data (rnntune.studies), so the demo works from an installed wheel.
DEMO_SPEC = Path(str(importlib.resources.files("rnntune.studies") / "sine-lstm.yaml"))
# ``serve``'s default on CPU: one single-threaded worker per usable core, which runs the demo study
# 2.3x as fast on 2 cores as one worker with both cores' threads, and its spec at other seeds
# 1.3-1.5x, with the same best values (benchmarks/serve_workers.py; docs/benchmarks.md has the figures). SQLite takes one writer at a time, so more than this many local
# workers would only queue on its lock.
SQLITE_MAX_WORKERS = 8
HostOpt = Annotated[str, typer.Option(help="bind address")]


def refuse_open_exposure(host: str, settings: Settings, insecure: bool) -> None:
    """Exit 2 rather than serve a non-loopback address with no token (unless ``--insecure``)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.tokens and not insecure:
        fail(
            f"refusing to serve on {host} without authentication: set RNNTUNE_API_TOKENS "
            "(comma-separated, or a file with one per line), or pass --insecure to run open",
            code=2,
        )


def api(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    dashboard: Annotated[bool, typer.Option(help="serve optuna-dashboard at /dashboard")] = True,
    insecure: InsecureOpt = False,
    database_url: DbOpt = None,
) -> None:
    """Run the HTTP API (and the dashboard) without local workers."""
    import uvicorn

    from rnntune.service.api.app import create_app

    setup_logging()
    settings = load_settings(database_url)
    refuse_open_exposure(host, settings, insecure)
    application = create_app(settings, dashboard=dashboard, bind_host=host)
    uvicorn.run(application, host=host, port=port, log_level="info", **uvicorn_logging())


def migrate(database_url: DbOpt = None) -> None:
    """Create or upgrade rnntune's tables (serve, api and worker also do this on start)."""
    from rnntune.service.store import migrate as migrations
    from rnntune.service.store.db import make_engine

    settings = load_settings(database_url)
    engine = make_engine(settings)
    before = migrations.current(engine)
    migrations.upgrade(engine)
    typer.echo(
        f"rnntune tables: {before or 'none'} -> {migrations.current(engine)} on {engine.url.render_as_string(hide_password=True)}"
    )


def dashboard(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8080,
    insecure: InsecureOpt = False,
    database_url: DbOpt = None,
) -> None:
    """Run optuna-dashboard alone on the study storage (read-only unless RNNTUNE_DASHBOARD_WRITABLE=1)."""
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from rnntune.service.api.dashboard import dashboard_app, with_healthz
    from rnntune.service.api.security import BrowserGuard, TokenAuth, allowed_hosts
    from rnntune.service.store.db import make_storage

    setup_logging()
    settings = load_settings(database_url)
    refuse_open_exposure(host, settings, insecure)
    application: Any = with_healthz(dashboard_app(make_storage(settings), writable=settings.dashboard_writable))
    if settings.tokens:
        application = TokenAuth(application, settings.tokens, enforce_roles=settings.owners_enforced)
    application = BrowserGuard(application)
    application = TrustedHostMiddleware(application, allowed_hosts=allowed_hosts(settings.allowed_hosts, host))
    uvicorn.run(application, host=host, port=port, **uvicorn_logging())


def serve(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            show_default="one per GPU, else one per usable core (at most 8 on SQLite), one torch thread each",
            help="local workers",
        ),
    ] = None,
    demo: Annotated[bool, typer.Option(help=f"submit {DEMO_SPEC.name} when there is no study yet")] = False,
    insecure: InsecureOpt = False,
    database_url: DbOpt = None,
) -> None:
    """API + dashboard + local workers in one command (SQLite by default)."""
    import uvicorn

    from rnntune.service.api.app import create_app

    setup_logging()
    settings = load_settings(database_url)
    refuse_open_exposure(host, settings, insecure)
    application = create_app(settings, bind_host=host)
    if demo:
        submit_demo(application)
    procs = start_workers(settings, workers)
    base = f"http://{host}:{port}"
    typer.echo(
        f"\nrnntune is up on {mask_url(settings.database_url)}\n"
        f"  API        {base}/v1/studies   (OpenAPI: {base}/docs)\n"
        f"  dashboard  {base}/dashboard\n"
        f"  workers    {len(procs)} local (pids {', '.join(str(p.pid) for p in procs) or '-'})\n"
        f"  submit     rnntune submit studies/sine-lstm.yaml --wait\n",
        err=True,
    )
    # uvicorn handles SIGTERM itself, then raises it again once the API is down: exit through
    # the finally below (which stops the workers) instead of dying by the default handler.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(application, host=host, port=port, log_level="info", **uvicorn_logging())
    finally:
        stop_workers(procs)


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def submit_demo(application: Any) -> None:
    """``serve --demo``: submit DEMO_SPEC through the app's own sessions when there is no study yet."""
    from rnntune.service.studies import registry

    with application.state.sessions() as session:
        if registry.list_studies(session):
            return
        row, _ = registry.create_study(session, application.state.storage, load_spec(DEMO_SPEC))
        typer.echo(f"demo: submitted study {row.name!r} ({row.n_trials} trials)", err=True)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's cpuset, taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(settings: Settings, n_gpus: int) -> int:
    """``serve``'s local workers when ``--workers`` is not given: one per GPU, else one per
    usable core (each with one torch thread), at most SQLITE_MAX_WORKERS on SQLite."""
    if n_gpus:
        return n_gpus
    cores = usable_cores()
    return min(cores, SQLITE_MAX_WORKERS) if settings.is_sqlite else cores


def start_workers(settings: Settings, n: int | None, extra: list[str] | None = None) -> list[subprocess.Popen]:
    """``n`` local ``rnntune worker`` processes (None: :func:`default_workers`), dealt round-robin
    over the GPUs, else on the CPU with the usable cores' threads shared out between them."""
    if n == 0:
        return []
    import torch  # here, not at import: client commands stay fast

    n_gpus = torch.cuda.device_count()
    if n is None:
        n = default_workers(settings, n_gpus)
    from rnntune.service.worker import SUPERVISOR_ENV

    # A worker gets the database URL and nothing else secret: no API tokens.
    env = {k: v for k, v in os.environ.items() if k not in ("RNNTUNE_API_TOKENS", "RNNTUNE_API_TOKEN")}
    env["RNNTUNE_DATABASE_URL"] = settings.database_url
    env[SUPERVISOR_ENV] = str(os.getpid())  # each worker watches this process and stops when it dies
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "rnntune.service.cli", "worker", *(extra or [])]
        if n_gpus:
            cmd += ["--device", f"cuda:{i % n_gpus}"]
        else:
            cmd += ["--device", "cpu", "--threads", str(max(1, usable_cores() // n))]
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def supervise_gpu_workers(
    settings: Settings, labels: list[str], per_gpu: int = 1, extra: list[str] | None = None
) -> int:
    """``per_gpu`` ``rnntune worker --device cuda:i`` processes per GPU (``start_workers`` deals
    the devices round-robin), each with ``extra`` arguments; SIGTERM/SIGINT are passed on to them."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        fail("--per-gpu: no CUDA device is visible", code=2)
    labels_args = [a for label in labels for a in ("--label", label)]
    procs = start_workers(settings, n * per_gpu, extra=labels_args + (extra or []))
    stopping = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return 0 if stopping or all(c == 0 for c in codes) else 1


def stop_workers(procs: list[subprocess.Popen], timeout_s: float = 15.0) -> None:
    """SIGTERM each worker still running, then kill any not gone within ``timeout_s`` in all."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
