"""``rnntune``: one entry point for the service (serve, api, worker) and its client (submit, status).

Client commands talk HTTP to ``RNNTUNE_API_URL`` and never import torch, so they start fast.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from rnntune.service.config import Settings, mask_url

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
# The example specs are package data (rnntune.studies), so the demo works from an installed wheel.
DEMO_SPEC = Path(str(importlib.resources.files("rnntune.studies") / "sine-lstm.yaml"))


def _settings(database_url: str | None = None) -> Settings:
    try:
        return Settings(**({"database_url": database_url} if database_url else {}))
    except ValueError as exc:
        _fail(f"settings: {exc}", code=2)


def _fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _logging(level: str = "INFO") -> None:
    from rnntune.service import logs

    logs.setup(level)  # RNNTUNE_LOG_JSON=1 (or --log-json): one JSON object per line


def _uvicorn_logging() -> dict:
    """In JSON mode uvicorn configures no handlers of its own: its lines go through ours."""
    from rnntune.service import logs

    return {"log_config": None} if logs.json_wanted() else {}


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
        os.environ["RNNTUNE_LOG_JSON"] = "1"  # read by _logging, and inherited by local workers


InsecureOpt = Annotated[bool, typer.Option(help="allow a non-loopback address without RNNTUNE_API_TOKENS")]


def _refuse_open_exposure(host: str, settings: Settings, insecure: bool) -> None:
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.tokens and not insecure:
        _fail(
            f"refusing to serve on {host} without authentication: set RNNTUNE_API_TOKENS "
            "(comma-separated, or a file with one per line), or pass --insecure to run open",
            code=2,
        )


DbOpt = Annotated[str | None, typer.Option("--database-url", envvar="RNNTUNE_DATABASE_URL", help="SQLAlchemy URL")]


# --- service ------------------------------------------------------------------------------------


@app.command()
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
    from rnntune.service.worker import SUPERVISOR_ENV, Worker, watch_supervisor

    _logging()
    if workers_per_gpu != 1 and not per_gpu:
        _fail("--workers-per-gpu: needs --per-gpu", code=2)
    for d in allow_commands:
        if not d.is_dir():
            _fail(f"--allow-commands: {d} is not a directory", 2)
    if per_gpu:
        extra = [a for d in allow_commands for a in ("--allow-commands", str(d))]
        raise typer.Exit(_supervise_gpu_workers(_settings(database_url), label, workers_per_gpu, extra))
    w = Worker(
        _settings(database_url),
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


@app.command()
def api(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    dashboard: Annotated[bool, typer.Option(help="serve optuna-dashboard at /dashboard")] = True,
    insecure: InsecureOpt = False,
    database_url: DbOpt = None,
) -> None:
    """Run the HTTP API (and the dashboard) without local workers."""
    import uvicorn

    from rnntune.service.api.app import create_app

    _logging()
    settings = _settings(database_url)
    _refuse_open_exposure(host, settings, insecure)
    application = create_app(settings, dashboard=dashboard, bind_host=host)
    uvicorn.run(application, host=host, port=port, log_level="info", **_uvicorn_logging())


@app.command()
def migrate(database_url: DbOpt = None) -> None:
    """Create or upgrade rnntune's tables (serve, api and worker also do this on start)."""
    from rnntune.service import migrate as migrations
    from rnntune.service.db import make_engine

    settings = _settings(database_url)
    engine = make_engine(settings)
    before = migrations.current(engine)
    migrations.upgrade(engine)
    typer.echo(
        f"rnntune tables: {before or 'none'} -> {migrations.current(engine)} on {engine.url.render_as_string(hide_password=True)}"
    )


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8080,
    insecure: InsecureOpt = False,
    database_url: DbOpt = None,
) -> None:
    """Run optuna-dashboard alone on the study storage (read-only unless RNNTUNE_DASHBOARD_WRITABLE=1)."""
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from rnntune.service.api.dashboard import dashboard_app, with_healthz
    from rnntune.service.api.security import BrowserGuard, TokenAuth, allowed_hosts
    from rnntune.service.db import make_storage

    _logging()
    settings = _settings(database_url)
    _refuse_open_exposure(host, settings, insecure)
    application = with_healthz(dashboard_app(make_storage(settings), writable=settings.dashboard_writable))
    if settings.tokens:
        application = TokenAuth(application, settings.tokens, enforce_roles=settings.owners_enforced)
    application = BrowserGuard(application)
    application = TrustedHostMiddleware(application, allowed_hosts=allowed_hosts(settings.allowed_hosts, host))
    uvicorn.run(application, host=host, port=port, **_uvicorn_logging())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
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

    _logging()
    settings = _settings(database_url)
    _refuse_open_exposure(host, settings, insecure)
    application = create_app(settings, bind_host=host)
    if demo:
        _submit_demo(application)
    procs = _start_workers(settings, workers)
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
        uvicorn.run(application, host=host, port=port, log_level="info", **_uvicorn_logging())
    finally:
        _stop_workers(procs)


def _exit_cleanly(signum, _frame):
    raise SystemExit(0)


def _submit_demo(application) -> None:
    from rnntune.service import registry
    from rnntune.service.spec import load_spec

    with application.state.sessions() as session:
        if registry.list_studies(session):
            return
        row, _ = registry.create_study(session, application.state.storage, load_spec(DEMO_SPEC))
        typer.echo(f"demo: submitted study {row.name!r} ({row.n_trials} trials)", err=True)


# ``serve``'s default on CPU: one single-threaded worker per usable core, which runs the demo study
# 2.3x as fast on 2 cores as one worker with both cores' threads, and its spec at other seeds
# 1.3-1.5x, with the same best values (benchmarks/serve_workers.py; docs/benchmarks.md has the figures). SQLite takes one writer at a time, so more than this many local
# workers would only queue on its lock.
SQLITE_MAX_WORKERS = 8


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


def _start_workers(settings: Settings, n: int | None, extra: list[str] | None = None) -> list[subprocess.Popen]:
    """``n`` local worker processes (None: :func:`default_workers`), dealt round-robin over the
    GPUs, else on the CPU with the usable cores' threads shared out between them."""
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


def _supervise_gpu_workers(
    settings: Settings, labels: list[str], per_gpu: int = 1, extra: list[str] | None = None
) -> int:
    """``per_gpu`` ``rnntune worker --device cuda:i`` processes per GPU (``_start_workers`` deals
    the devices round-robin), each with ``extra`` arguments; SIGTERM/SIGINT are passed on to them."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        _fail("--per-gpu: no CUDA device is visible", code=2)
    labels_args = [a for label in labels for a in ("--label", label)]
    procs = _start_workers(settings, n * per_gpu, extra=labels_args + (extra or []))
    stopping = []

    def forward(signum, _frame):
        stopping.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return 0 if stopping or all(c == 0 for c in codes) else 1


def _stop_workers(procs: list[subprocess.Popen], timeout_s: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


# --- client ---------------------------------------------------------------------------------


ApiOpt = Annotated[str | None, typer.Option("--api-url", envvar="RNNTUNE_API_URL", help="the rnntune API")]


def _client(api_url: str | None):
    import httpx2

    token = os.environ.get("RNNTUNE_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.Client(base_url=api_url or Settings().api_url, timeout=30.0, headers=headers)


def _request(client, method: str, path: str, **kwargs):
    import httpx2

    try:
        response = client.request(method, path, **kwargs)
    except httpx2.HTTPError as exc:
        _fail(f"cannot reach the API at {client.base_url} ({exc}); is `rnntune serve` running?")
    if response.status_code == 401:
        _fail(f"the API at {client.base_url} wants a token: set RNNTUNE_API_TOKEN")
    if response.status_code == 403:  # another owner's study or data set, or a read token
        _fail(f"403: {response.json().get('detail', response.text)}")
    return response


def _load(path: Path):
    from rnntune.service.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        _fail(f"{path}: {exc}", code=2)


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")]) -> None:
    """Check a study spec without submitting it."""
    spec = _load(path)
    typer.echo(
        f"{path}: ok ({spec.name}: {spec.budget.n_trials} trials, sampler {spec.sampler.name}, pruner {spec.pruner.name})"
    )


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(help="a study spec, YAML or JSON")],
    wait: Annotated[bool, typer.Option(help="follow progress until the budget is spent")] = False,
    api_url: ApiOpt = None,
) -> None:
    """Submit a study spec to the API."""
    spec = _load(path)
    with _client(api_url) as client:
        r = _request(client, "POST", "/v1/studies", json=spec.model_dump(mode="json"))
        if r.status_code == 422:
            detail = r.json()["detail"]
            _fail("; ".join(f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in detail), code=2)
        if r.status_code >= 400:
            _fail(f"{r.status_code}: {r.json().get('detail', r.text)}")
        study = r.json()
        verb = "submitted" if r.status_code == 201 else "already exists (same spec)"
        typer.echo(f"study {study['name']} {verb}: {study['n_trials']} trials, state {study['state']}")
        for warning in study.get("warnings") or []:
            typer.echo(f"warning: {warning}")
        if wait:
            raise typer.Exit(_wait(client, study["name"]))


def _progress_line(s: dict) -> str:
    c = s["counts"]
    best = "-" if s["best_value"] is None else f"{s['best_value']:.6g}"
    return (
        f"{s['name']}: {s['state']:<9} {s['finished']}/{s['n_trials']} finished "
        f"(complete {c['complete']}, pruned {c['pruned']}, failed {c['failed']}, interrupted {c['interrupted']}, "
        f"running {c['running']})  "
        f"best {s['metric']} {best}" + (f"  ({s['reason']})" if (s.get("reason") or "").startswith("waiting") else "")
    )


def _wait(client, name: str, poll_s: float = 1.0) -> int:
    tty = sys.stdout.isatty()
    last = ""
    try:
        while True:
            s = _request(client, "GET", f"/v1/studies/{name}").json()
            line = _progress_line(s)
            if line != last:
                typer.echo(("\r\033[K" + line) if tty else line, nl=not tty)
                last = line
            if s["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped waiting; the study goes on (rnntune status {name})")
        return 130
    if tty:
        typer.echo()
    _print_best(s)
    return 0 if s["state"] == "done" else 1


def _print_best(s: dict) -> None:
    if s.get("reason"):
        typer.echo(f"reason: {s['reason']}")
    best = s.get("best_trial")
    if not best:
        typer.echo("no completed trial")
        return
    naive = best["user_attrs"].get("naive_val_loss")
    baseline = f" (naive baseline {naive:.6g})" if naive is not None else ""
    typer.echo(
        f"best trial #{best['number']}: {s['metric']} = {best['value']:.6g} after {best['epochs']} epochs{baseline}"
    )
    for k, v in best["params"].items():
        typer.echo(f"  {k}: {v}")


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="a study; all studies when omitted")] = None,
    api_url: ApiOpt = None,
) -> None:
    """Show studies (or one study with its best trial)."""
    with _client(api_url) as client:
        if name is None:
            items = _request(client, "GET", "/v1/studies").json()["items"]
            if not items:
                typer.echo("no studies")
            for s in items:
                typer.echo(_progress_line(s) + (f"  owner {s['owner']}" if s.get("owner") else ""))
            return
        r = _request(client, "GET", f"/v1/studies/{name}")
        if r.status_code == 404:
            _fail(f"no study named {name!r}")
        s = r.json()
        typer.echo(_progress_line(s))
        if s.get("owner"):
            typer.echo(f"owner: {s['owner']}")
        _print_best(s)
        if s.get("best_trial") or s.get("reevaluations") is not None:
            best = _request(client, "GET", f"/v1/studies/{name}/best")
            if best.status_code == 200 and best.json().get("selection") is not None:
                _print_selection(best.json()["selection"], s["metric"])
            if best.status_code == 200:
                _print_baselines(best.json())


def _print_baselines(best: dict) -> None:
    """The stored model's test score beside the simple models' on the same split, the verdict
    line, and the result's warnings."""
    baselines = best.get("baselines")
    if baselines:
        key = (best.get("versus_baseline") or {}).get("metric", "test loss").removeprefix("test ")
        model = (best.get("test_metrics") or {}).get(key)
        typer.echo(f"test {key}: tuned model {_num(model)}; baselines on the same split:")
        for name, b in baselines.items():
            if b.get("skipped"):
                typer.echo(f"  {name:<15} skipped: {b['skipped']}")
                continue
            test = b.get("test") or {}
            typer.echo(f"  {name:<15} {_num(test.get(key)):>10}  (val {_num((b.get('val') or {}).get(key))})")
    versus = best.get("versus_baseline")
    if versus:
        typer.echo(versus["line"])
    for warning in best.get("warnings") or []:
        typer.echo(f"warning: {warning}")


def _print_selection(sel: dict, metric: str) -> None:
    """The re-evaluated candidates: mean ± sd over n runs each, the winner marked."""
    typer.echo(
        f"re-evaluation: top {sel['top_k']} x {sel['seeds']} seeds x {sel['folds']} folds, "
        f"{sel['done']}/{sel['total']} runs done; winner: best mean {metric}"
    )
    if not sel["candidates"]:
        typer.echo("  (candidates are chosen when the search ends)")
        return
    typer.echo(f"  {'trial':>6}  {'search':>10}  {'mean':>10}  {'sd':>10}  {'n':>3}  {'failed':>6}")
    for c in sel["candidates"]:
        search = next((r["value"] for r in c["runs"] if r["seed_index"] == 0 and r["fold"] == sel["folds"] - 1), None)
        cells = [_num(search), _num(c["mean"]), "±" + _num(c["sd"]).strip() if c["sd"] is not None else "-"]
        mark = "  <- winner" if c["trial"] == sel["winner"] else ""
        mark += "  (search best)" if c["trial"] == sel["search_best"] else ""
        typer.echo(
            f"  {'#' + str(c['trial']):>6}  {cells[0]:>10}  {cells[1]:>10}  {cells[2]:>10}  {c['n']:>3}  "
            f"{c['failed']:>6}{mark}"
        )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _worker_line(w: dict) -> str:
    doing = ""
    if w["study"] is not None:
        trial = f", trial {w['trial_number']}" if w["trial_number"] is not None else ""
        doing = f" on {w['study']} (ticket {w['ticket_id']}{trial})"
    labels = f" labels {','.join(w['labels'])}" if w["labels"] else ""
    labels += "".join(f"; plugin {p['name']} ({p['group']}, {p['distribution']} {p['version']})" for p in w["plugins"])
    labels += "; runs commands" if w["commands"] else ""
    return f"{w['id']}: {w['state']}{doing}; {w['device']}{labels}; last heartbeat {w['heartbeat_age_s']:.0f} s ago"


@app.command()
def workers(
    all_: Annotated[bool, typer.Option("--all", help="also workers that deregistered")] = False,
    api_url: ApiOpt = None,
) -> None:
    """List worker processes: state (idle, busy, lost, stopped), the study and trial each runs."""
    with _client(api_url) as client:
        items = _request(client, "GET", "/v1/workers", params={"include_stopped": all_}).json()["items"]
    if not items:
        typer.echo("no workers" + ("" if all_ else " running (--all: also stopped ones)"))
    for w in items:
        typer.echo(_worker_line(w))


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="the study")],
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
        return _export_trial(name, trial, output, device, database_url, api_url)
    with _client(api_url) as client:
        r = _request(client, "GET", f"/v1/studies/{name}/best/model")
        if r.status_code == 404:
            _fail(r.json().get("detail", f"no study named {name!r}"))
        if r.status_code >= 400:
            _fail(f"{r.status_code}: {r.text}")
        best = _request(client, "GET", f"/v1/studies/{name}/best").json()
    path = output or Path(f"{name}-best.pt")
    path.write_bytes(r.content)
    test = best.get("test_metrics") or {}
    shown = ", ".join(f"{k} {v:.6g}" for k, v in test.items() if isinstance(v, (int, float)))
    typer.echo(
        f"wrote {path} ({len(r.content):,} bytes, sha256 {r.headers.get('x-checksum-sha256', '?')[:12]}): trial #{best['trial_number']}"
    )
    typer.echo(f"  {best['metric']} {best['value']:.6g}; test: {shown or '-'}")
    _print_baselines(best)


def _export_trial(
    name: str, number: int, output: Path | None, device: str, database_url: str | None, api_url: str | None
) -> None:
    """Retrain trial ``number`` of study ``name`` on this machine with the finalize step's own code
    (same config and seed, train split, up to its best epoch), test it once, write the model file."""
    with _client(api_url) as client:
        r = _request(client, "GET", f"/v1/studies/{name}")
        if r.status_code == 404:
            _fail(f"no study named {name!r}")
        spec_json = r.json()["spec"]
        page = _request(client, "GET", f"/v1/studies/{name}/trials", params={"after": number - 1, "limit": 1}).json()
    found = [t for t in page["items"] if t["number"] == number]
    if not found:
        _fail(f"--trial: study {name!r} has no trial {number}", code=2)
    t = found[0]
    if t["state"] != "COMPLETE":
        _fail(f"--trial: trial {number} is {t['state']}; only a complete trial can be retrained", code=2)

    import threading

    from rnntune.service.data_cache import DataCache, StudyDataError
    from rnntune.service.finalize import build_model
    from rnntune.service.recipe import TrialRecord
    from rnntune.service.spec import load_stored
    from rnntune.service.worker import pick_device

    _logging("WARNING")
    spec = load_stored(spec_json)
    settings = _settings(database_url)  # RNNTUNE_DATA_ROOTS: where a spec's data.path may be read here
    sessions = None
    if spec.data.dataset is not None and database_url:
        from rnntune.service.db import make_engine, session_factory

        sessions = session_factory(make_engine(settings))
    cache = DataCache(
        sessions=sessions,
        data_roots=settings.roots,
        file_limits=settings.file_limits,
        allow_root_text=settings.allow_root_text,
    )
    record = TrialRecord.from_dict(t)
    try:
        built = build_model(spec, record, device=pick_device(device), data_cache=cache, stop=threading.Event())
    except StudyDataError as exc:
        hint = " (an uploaded data set: pass --database-url)" if spec.data.dataset and sessions is None else ""
        _fail(f"{exc}{hint}")
    path = output or Path(f"{name}-trial-{number}.pt")
    path.write_bytes(built.content)
    import hashlib

    shown = ", ".join(f"{k} {v:.6g}" for k, v in (built.test or {}).items() if isinstance(v, (int, float)))
    objectives = t["user_attrs"].get("objectives") or {spec.metric: t["value"]}
    typer.echo(
        f"wrote {path} ({len(built.content):,} bytes, sha256 {hashlib.sha256(built.content).hexdigest()[:12]}): "
        f"trial #{number} retrained on {built.device}"
    )
    typer.echo(f"  {', '.join(f'{k} {v:.6g}' for k, v in objectives.items())}; test: {shown or '-'}")
    _print_baselines(
        {"baselines": built.baselines, "versus_baseline": built.versus, "test_metrics": built.test, "warnings": []}
    )


datasets_app = typer.Typer(no_args_is_help=True, help="Uploaded data sets (a spec names one as data.dataset).")
app.add_typer(datasets_app, name="datasets")


def _dataset_line(d: dict) -> str:
    info = d["info"]
    what = (
        f"{info.get('rows')} rows, numeric columns {info.get('numeric_columns')}"
        if d["format"] == "csv"
        else f"X {info.get('X')}, y {info.get('y')}, {info.get('task')}"
    )
    owner = f"; owner {d['owner']}" if d.get("owner") else ""
    return f"{d['name']} (id {d['id']}): {d['format']}, {d['size']:,} bytes, sha256 {d['sha256'][:12]}; {what}{owner}"


@datasets_app.command("upload")
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
        _fail(f"cannot read {path}: {exc.strerror or exc}", code=2)
    fields = {"delimiter": delimiter} | ({"name": name} if name else {}) | ({"format": format} if format else {})
    with _client(api_url) as client:
        r = _request(client, "POST", "/v1/datasets", files={"file": (path.name, content)}, data=fields)
    if r.status_code >= 400:
        detail = (
            r.json().get("detail", r.text)
            if r.headers.get("content-type", "").startswith("application/json")
            else r.text
        )
        _fail(f"{r.status_code}: {detail}", code=2 if r.status_code == 422 else 1)
    typer.echo(f"uploaded {_dataset_line(r.json())}")


@datasets_app.command("list")
def datasets_list(api_url: ApiOpt = None) -> None:
    """List uploaded data sets."""
    with _client(api_url) as client:
        items = _request(client, "GET", "/v1/datasets").json()["items"]
    if not items:
        typer.echo("no datasets")
    for d in items:
        typer.echo(_dataset_line(d))


def _control(action: str, name: str, api_url: str | None) -> None:
    with _client(api_url) as client:
        r = _request(client, "POST", f"/v1/studies/{name}/{action}")
        if r.status_code == 404:
            _fail(f"no study named {name!r}")
        if r.status_code == 409:
            _fail(r.json()["detail"])
        typer.echo(_progress_line(r.json()))


@app.command()
def cancel(name: Annotated[str, typer.Argument(help="the study")], api_url: ApiOpt = None) -> None:
    """Cancel a study: no new trials; running ones stop at their next epoch boundary."""
    _control("cancel", name, api_url)


@app.command()
def pause(name: Annotated[str, typer.Argument(help="the study")], api_url: ApiOpt = None) -> None:
    """Pause a study: running trials stop and are re-queued with the same parameters."""
    _control("pause", name, api_url)


@app.command()
def resume(name: Annotated[str, typer.Argument(help="the study")], api_url: ApiOpt = None) -> None:
    """Resume a paused study toward the same budget."""
    _control("resume", name, api_url)


# --- a study after its budget: extend, delete, model versions (docs/studies.md) ---


@app.command()
def extend(
    name: Annotated[str, typer.Argument(help="the study")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="more trials to run")],
    wait: Annotated[bool, typer.Option(help="follow progress until the new budget is spent")] = False,
    api_url: ApiOpt = None,
) -> None:
    """Run more trials of a study (done, cancelled or failed by its budget: it runs again with its whole history)."""
    with _client(api_url) as client:
        r = _request(client, "POST", f"/v1/studies/{name}/extend", json={"n_trials": trials})
        if r.status_code == 404:
            _fail(f"no study named {name!r}")
        if r.status_code == 422:
            _fail("; ".join(f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in r.json()["detail"]), code=2)
        if r.status_code >= 400:
            _fail(f"{r.status_code}: {r.json().get('detail', r.text)}")
        typer.echo(_progress_line(r.json()))
        if wait:
            raise typer.Exit(_wait(client, name))


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="the study")],
    force: Annotated[bool, typer.Option(help="cancel its running trials first and wait for the workers")] = False,
    api_url: ApiOpt = None,
) -> None:
    """Delete a study, its trials and model versions; refused while trials run unless --force."""
    with _client(api_url) as client:
        r = _request(client, "DELETE", f"/v1/studies/{name}", params={"force": "true"} if force else None)
        if r.status_code == 404:
            _fail(f"no study named {name!r}")
        if r.status_code >= 400:
            _fail(f"{r.status_code}: {r.json().get('detail', r.text)}")
        typer.echo(f"study {name} deleted")


@app.command()
def models(name: Annotated[str, typer.Argument(help="the study")], api_url: ApiOpt = None) -> None:
    """List a study's stored model versions (one per budget and extension); * marks the current one."""
    with _client(api_url) as client:
        r = _request(client, "GET", f"/v1/studies/{name}/models")
        if r.status_code == 404:
            _fail(f"no study named {name!r}")
        body = r.json()
        if not body["items"]:
            typer.echo(f"{name}: no model stored yet")
        for m in body["items"]:
            metric = "-" if m["metric"] is None else f"{m['metric']:.6g}"
            mark = "*" if m["current"] else " "
            typer.echo(
                f"{mark} v{m['version']}  trial {m['trial_number']}  {body['metric']} {metric}  {m['created_at']}"
            )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
