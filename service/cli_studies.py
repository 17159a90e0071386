"""``rnntune extend``, ``rnntune delete`` and ``rnntune models``: a study after its budget
(client commands: HTTP to ``RNNTUNE_API_URL``; registered on :data:`rnntune.service.cli.app`, which imports
this module at its end)."""

from __future__ import annotations

from typing import Annotated

import typer

from rnntune.service.cli import ApiOpt, _client, _fail, _progress_line, _request, _wait, app


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
