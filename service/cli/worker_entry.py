"""``rnntune worker``: this process becomes a worker (service/worker.py), or with ``--per-gpu``
the supervisor of one or more worker processes per GPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from rnntune.service.cli.common import DbOpt, fail, load_settings, setup_logging
from rnntune.service.cli.server import supervise_gpu_workers


def worker(
    label: Annotated[list[str], typer.Option("--label", help="take only studies whose labels this worker has")] = [],  # noqa: B006
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default 1 on CPU)")] = None,
    max_trials: Annotated[int | None, typer.Option(help="exit after this many trials")] = None,
    exit_when_idle: Annotated[bool, typer.Option(help="exit when no ticket is queued")] = False,
    per_gpu: Annotated[bool, typer.Option(help="run one worker process per visible GPU and supervise them")] = False,
    workers_per_gpu: Annotated[
        int,
        typer.Option(min=1, help="with --per-gpu: worker processes per GPU (small models that leave a GPU idle)"),
    ] = 1,
    allow_commands: Annotated[
        list[Path],
        typer.Option(
            "--allow-commands",
            help="run command trials whose script lies in this directory (repeatable; adds to RNNTUNE_COMMAND_DIRS)",
        ),
    ] = [],  # noqa: B006
    database_url: DbOpt = None,
) -> None:
    """Run a worker: claim queued trials, train them, report every epoch."""
    from rnntune.service.worker import SUPERVISOR_ENV, Worker, watch_supervisor  # torch: only here

    setup_logging()
    if workers_per_gpu != 1 and not per_gpu:
        fail("--workers-per-gpu: needs --per-gpu", code=2)
    for d in allow_commands:
        if not d.is_dir():
            fail(f"--allow-commands: {d} is not a directory", 2)
    if per_gpu:
        extra = [a for d in allow_commands for a in ("--allow-commands", str(d))]
        raise typer.Exit(supervise_gpu_workers(load_settings(database_url), label, workers_per_gpu, extra))
    w = Worker(
        load_settings(database_url),
        labels=set(label),
        device=device,
        threads=threads,
        max_trials=max_trials,
        exit_when_idle=exit_when_idle,
        command_dirs=[str(d) for d in allow_commands],
    )
    w.install_signal_handlers()
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor and supervisor.isdigit():
        watch_supervisor(w, int(supervisor))
    raise typer.Exit(w.run())
