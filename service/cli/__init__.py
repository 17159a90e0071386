"""``rnntune``: one entry point for the service (serve, api, worker) and its client (submit, status).

Client commands talk HTTP to ``RNNTUNE_API_URL`` and never import torch, so they start fast.

This module wires the commands into one typer app: server.py runs the service's processes,
worker_entry.py a worker, commands.py the client commands (through client.py, printing what
render.py makes of the answers) and retrain.py ``export --trial``'s local training.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

import rnntune.service.cli.commands as commands
import rnntune.service.cli.render as render
import rnntune.service.cli.server as server
from rnntune.service.api.schemas import WorkerPublic
from rnntune.service.cli.common import setup_logging
from rnntune.service.cli.server import DEMO_SPEC, SQLITE_MAX_WORKERS, default_workers, usable_cores
from rnntune.service.cli.worker_entry import worker

__all__ = [
    "DEMO_SPEC",
    "SQLITE_MAX_WORKERS",
    "_logging",
    "_supervise_gpu_workers",
    "_worker_line",
    "app",
    "default_workers",
    "main",
    "usable_cores",
]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])


@app.callback()
def _global_options(
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json",
            envvar="RNNTUNE_LOG_JSON",
            help="log one JSON object per line (ts, level, logger, msg, worker/study/trial ids)",
        ),
    ] = False,
) -> None:
    """Self-hosted hyperparameter optimisation for recurrent neural networks."""
    if log_json:
        os.environ["RNNTUNE_LOG_JSON"] = "1"  # read by setup_logging, and inherited by local workers


# --- service ---
app.command()(worker)
app.command()(server.api)
app.command()(server.migrate)
app.command()(server.dashboard)
app.command()(server.serve)

# --- client ---
app.command()(commands.validate)
app.command()(commands.submit)
app.command()(commands.status)
app.command()(commands.workers)
app.command()(commands.export)
datasets_app = typer.Typer(no_args_is_help=True, help="Uploaded data sets (a spec names one as data.dataset).")
datasets_app.command("upload")(commands.datasets_upload)
datasets_app.command("list")(commands.datasets_list)
app.add_typer(datasets_app, name="datasets")
app.command()(commands.cancel)
app.command()(commands.pause)
app.command()(commands.resume)
app.command()(commands.extend)
app.command()(commands.delete)
app.command()(commands.models)

# Names tests import from this package (tests/fault_worker.py, test_plugins.py, test_workers_per_gpu.py).
_logging = setup_logging
_supervise_gpu_workers = server.supervise_gpu_workers


def _worker_line(item: dict) -> str:
    """``rnntune workers``' line for one item of GET /v1/workers, as JSON."""
    return render.worker_line(WorkerPublic.model_validate(item))


def main() -> None:
    app()
