"""The client commands: validate, submit, status, workers, export, datasets, cancel, pause,
resume, extend, delete, models. Each talks to the API through :class:`client.Api` and prints
what :mod:`render` makes of the answer; ``export --trial`` retrains here (:mod:`retrain`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

import rnntune.service.cli.render as render
import rnntune.service.cli.retrain as retrain
from rnntune.service.api.schemas import BestPublic
from rnntune.service.cli.client import Api
from rnntune.service.cli.common import ApiOpt, echo_lines, fail, load_spec_file

NameArg = Annotated[str, typer.Argument(help="the study")]
SpecArg = Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")]


def validate(path: SpecArg) -> None:
    """Check a study spec without submitting it."""
    spec = load_spec_file(path)
    typer.echo(
        f"{path}: ok ({spec.name}: {spec.budget.n_trials} trials, sampler {spec.sampler.name}, pruner {spec.pruner.name})"
    )


def submit(
    path: SpecArg,
    wait: Annotated[bool, typer.Option(help="follow progress until the budget is spent")] = False,
    api_url: ApiOpt = None,
) -> None:
    """Submit a study spec to the API."""
    spec = load_spec_file(path)
    with Api(api_url) as api:
        study, created = api.submit(spec)
        verb = "submitted" if created else "already exists (same spec)"
        typer.echo(f"study {study.name} {verb}: {study.n_trials} trials, state {study.state}")
        echo_lines(f"warning: {warning}" for warning in study.warnings)
        if wait:
            raise typer.Exit(wait_for_study(api, study.name))


def wait_for_study(api: Api, name: str, poll_s: float = 1.0) -> int:
    """Follow study ``name``'s progress line until it ends; 0 when it is done, 130 on Ctrl-C."""
    tty = sys.stdout.isatty()
    last = ""
    try:
        while True:
            s = api.study(name)
            line = render.progress_line(s)
            if line != last:
                typer.echo(("\r\033[K" + line) if tty else line, nl=not tty)
                last = line
            if s.state in ("done", "failed", "cancelled"):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped waiting; the study goes on (rnntune status {name})")
        return 130
    if tty:
        typer.echo()
    echo_lines(render.best_lines(s))
    return 0 if s.state == "done" else 1


def status(
    name: Annotated[str | None, typer.Argument(help="a study; all studies when omitted")] = None,
    api_url: ApiOpt = None,
) -> None:
    """Show studies (or one study with its best trial)."""
    with Api(api_url) as api:
        if name is None:
            items = api.studies()
            if not items:
                typer.echo("no studies")
            for summary in items:
                typer.echo(render.progress_line(summary) + (f"  owner {summary.owner}" if summary.owner else ""))
            return
        s = api.study(name)
        typer.echo(render.progress_line(s))
        if s.owner:
            typer.echo(f"owner: {s.owner}")
        echo_lines(render.best_lines(s))
        if s.best_trial or s.reevaluations is not None:
            best = api.best(name)
            if best is not None and best.selection is not None:
                echo_lines(render.selection_lines(best.selection, s.metric))
            if best is not None:
                echo_lines(_baselines_of(best))


def _baselines_of(best: BestPublic) -> list[str]:
    return render.baseline_lines(best.baselines, best.versus_baseline, best.test_metrics, best.warnings)


def workers(
    all_: Annotated[bool, typer.Option("--all", help="also workers that deregistered")] = False,
    api_url: ApiOpt = None,
) -> None:
    """List worker processes: state (idle, busy, lost, stopped), the study and trial each runs."""
    with Api(api_url) as api:
        items = api.workers(include_stopped=all_)
    if not items:
        typer.echo("no workers" + ("" if all_ else " running (--all: also stopped ones)"))
    echo_lines(render.worker_line(w) for w in items)


def export(
    name: NameArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="where to write (default: NAME-best.pt, NAME-trial-N.pt)")
    ] = None,
    trial: Annotated[
        int | None,
        typer.Option(
            "--trial",
            help="retrain this complete trial here, as the finalize step does (e.g. one on the study's Pareto "
            "front: GET /v1/studies/NAME/pareto), instead of downloading the stored best model",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="--trial: where to retrain (auto, cpu, cuda, cuda:N)")] = "auto",
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url", envvar="RNNTUNE_DATABASE_URL", help="--trial on an uploaded data set: where to read it"
        ),
    ] = None,
    api_url: ApiOpt = None,
) -> None:
    """Download a finished study's best model: `from rnntune import load_model; load_model(FILE).predict(x)`."""
    if trial is not None:
        return retrain.export_trial(name, trial, output, device, database_url, api_url)
    with Api(api_url) as api:
        r = api.best_model(name)
        best = api.best(name)
    if best is None:
        fail(f"study {name!r} has no best trial")
    path = output or Path(f"{name}-best.pt")
    path.write_bytes(r.content)
    checksum = r.headers.get("x-checksum-sha256", "?")[:12]
    typer.echo(f"wrote {path} ({len(r.content):,} bytes, sha256 {checksum}): trial #{best.trial_number}")
    typer.echo(f"  {best.metric} {best.value:.6g}; test: {render.metrics_shown(best.test_metrics)}")
    echo_lines(_baselines_of(best))


def datasets_upload(
    path: Annotated[
        Path, typer.Argument(help="a .csv, .jsonl, .npz, .npy (embedding matrix) or .txt (its vocabulary)")
    ],
    name: Annotated[str | None, typer.Option(help="default: the file name without extension")] = None,
    format: Annotated[
        str | None,
        typer.Option("--format", help="csv, npz, text (labelled text), npy or vocab; default: the extension"),
    ] = None,
    delimiter: Annotated[str, typer.Option(help="CSV field delimiter")] = ",",
    api_url: ApiOpt = None,
) -> None:
    """Upload a data file; it is checked and stored for every worker to read."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", code=2)
    fields = {"delimiter": delimiter} | ({"name": name} if name else {}) | ({"format": format} if format else {})
    with Api(api_url) as api:
        uploaded = api.upload(path.name, content, fields)
    typer.echo(f"uploaded {render.dataset_line(uploaded)}")


def datasets_list(api_url: ApiOpt = None) -> None:
    """List uploaded data sets."""
    with Api(api_url) as api:
        items = api.datasets()
    if not items:
        typer.echo("no datasets")
    echo_lines(render.dataset_line(d) for d in items)


def cancel(name: NameArg, api_url: ApiOpt = None) -> None:
    """Cancel a study: no new trials; running ones stop at their next epoch boundary."""
    with Api(api_url) as api:
        typer.echo(render.progress_line(api.control("cancel", name)))


def pause(name: NameArg, api_url: ApiOpt = None) -> None:
    """Pause a study: running trials stop and are re-queued with the same parameters."""
    with Api(api_url) as api:
        typer.echo(render.progress_line(api.control("pause", name)))


def resume(name: NameArg, api_url: ApiOpt = None) -> None:
    """Resume a paused study toward the same budget."""
    with Api(api_url) as api:
        typer.echo(render.progress_line(api.control("resume", name)))


# --- a study after its budget: extend, delete, model versions (docs/studies.md) ---


def extend(
    name: NameArg,
    trials: Annotated[int, typer.Option("--trials", min=1, help="more trials to run")],
    wait: Annotated[bool, typer.Option(help="follow progress until the new budget is spent")] = False,
    api_url: ApiOpt = None,
) -> None:
    """Run more trials of a study (done, cancelled or failed by its budget: it runs again with its whole history)."""
    with Api(api_url) as api:
        typer.echo(render.progress_line(api.extend(name, trials)))
        if wait:
            raise typer.Exit(wait_for_study(api, name))


def delete(
    name: NameArg,
    force: Annotated[bool, typer.Option(help="cancel its running trials first and wait for the workers")] = False,
    api_url: ApiOpt = None,
) -> None:
    """Delete a study, its trials and model versions; refused while trials run unless --force."""
    with Api(api_url) as api:
        api.delete(name, force)
    typer.echo(f"study {name} deleted")


def models(name: NameArg, api_url: ApiOpt = None) -> None:
    """List a study's stored model versions (one per budget and extension); * marks the current one."""
    with Api(api_url) as api:
        versions = api.models(name)
    if not versions.items:
        typer.echo(f"{name}: no model stored yet")
    echo_lines(render.model_version_line(m, versions.metric) for m in versions.items)
