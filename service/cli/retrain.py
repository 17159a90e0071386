"""``rnntune export --trial N``: retrain one trial of a study on this machine with the finalize
step's own code (service/trials/finalize.py, service/trials/recipe.py: same config and seed, train split, up
to its best epoch), test it once and write its model file.

The trial and the spec come from the API; the data from this machine's data roots, or an
uploaded data set from the database (``--database-url``). The training code (optuna, torch) is
imported when a trial is retrained, not when the CLI starts.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

import rnntune.service.cli.render as render
from rnntune.service.api.schemas import TrialPublic
from rnntune.service.cli.client import Api
from rnntune.service.cli.common import echo_lines, fail, load_settings, setup_logging
from rnntune.service.spec import StudySpec, load_stored
from rnntune.service.store.attrs import TrialAttr

if TYPE_CHECKING:  # the annotation only: finalize loads optuna, and its training torch
    from rnntune.service.trials.finalize import BuiltModel


def pick_device(requested: str) -> str:
    """``auto``: cuda when there is a GPU, else cpu; any other name as given."""
    if requested != "auto":
        return requested
    from rnntune.models import pick_device as torch_device

    return str(torch_device("auto"))


def retrain(spec: StudySpec, trial: TrialPublic, device: str, database_url: str | None) -> BuiltModel:
    """``trial``'s model, trained here as the finalize step trains the best one."""
    from rnntune.service.data.data_cache import DataCache, StudyDataError
    from rnntune.service.trials.finalize import build_model
    from rnntune.service.trials.recipe import TrialRecord

    settings = load_settings(database_url)  # RNNTUNE_DATA_ROOTS: where a spec's data.path may be read here
    uploaded = spec.data is not None and spec.data.dataset is not None
    sessions = None
    if uploaded and database_url:
        from rnntune.service.store.db import make_engine, session_factory

        sessions = session_factory(make_engine(settings))
    cache = DataCache(
        sessions=sessions,
        data_roots=settings.roots,
        file_limits=settings.file_limits,
        allow_root_text=settings.allow_root_text,
    )
    record = TrialRecord(trial.number, trial.params, trial.value, trial.user_attrs)
    try:
        return build_model(spec, record, device=pick_device(device), data_cache=cache, stop=threading.Event())
    except StudyDataError as exc:
        hint = " (an uploaded data set: pass --database-url)" if uploaded and sessions is None else ""
        fail(f"{exc}{hint}")


def export_trial(
    name: str, number: int, output: Path | None, device: str, database_url: str | None, api_url: str | None
) -> None:
    """Retrain trial ``number`` of study ``name`` here and write ``NAME-trial-N.pt`` (or ``output``)."""
    with Api(api_url) as api:
        spec_json = api.study(name).spec
        t = api.trial(name, number)
    if t is None:
        fail(f"--trial: study {name!r} has no trial {number}", code=2)
    if t.state != "COMPLETE":
        fail(f"--trial: trial {number} is {t.state}; only a complete trial can be retrained", code=2)
    setup_logging("WARNING")
    spec = load_stored(spec_json)
    built = retrain(spec, t, device, database_url)
    path = output or Path(f"{name}-trial-{number}.pt")
    path.write_bytes(built.content)
    objectives: dict[str, Any] = t.user_attrs.get(TrialAttr.OBJECTIVES) or {spec.metric: t.value}
    typer.echo(
        f"wrote {path} ({len(built.content):,} bytes, sha256 {hashlib.sha256(built.content).hexdigest()[:12]}): "
        f"trial #{number} retrained on {built.device}"
    )
    typer.echo(
        f"  {', '.join(f'{k} {v:.6g}' for k, v in objectives.items())}; test: {render.metrics_shown(built.test)}"
    )
    echo_lines(render.baseline_lines(built.baselines, built.versus, built.test, []))
