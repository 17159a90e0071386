"""/v1/studies/{name}/best, /best/model, /pareto, /importances, /trials.csv: what a study found."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import optuna
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import StreamingResponse

from rnntune.service.api.deps import SessionDep, StorageDep, study_or_404
from rnntune.service.api.schemas import (
    BestPublic,
    ImportancesPublic,
    ModelPublic,
    ObjectivePublic,
    ParetoPublic,
    ParetoTrial,
    Problem,
)
from rnntune.service.reports import importance, results
from rnntune.service.search import hyperparameters
from rnntune.service.spec import stored_spec
from rnntune.service.store import model_store
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.tables import ModelRow
from rnntune.service.trials import pareto, selection

router = APIRouter(prefix="/v1/studies", tags=["results"])

CSV_PAGE = 500
CSV_ATTRS = (TrialAttr.BEST_EPOCH, TrialAttr.TRAIN_SECONDS, TrialAttr.NAIVE_VAL_LOSS, TrialAttr.FAIL_REASON)


@router.get("/{name}/best", responses={404: {"model": Problem}})
def get_best(name: str, session: SessionDep) -> BestPublic:
    """The best trial's parameters, val metrics and (once the model is stored) test metrics; with a selection, the candidates' mean, sd and n."""
    row = study_or_404(session, name)
    spec = stored_spec(row)
    assert spec.direction is not None  # validation sets it
    best = results.best_trial(session, row.optuna_study_id, spec.direction)
    if best is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"study {name!r} has no completed trial yet (state {row.state})"
        )
    model = model_store.get_model(session, row.id)
    study = {
        "study": row.name,
        "state": row.state,
        "metric": spec.metric,
        "direction": spec.direction,
        "selection": selection.summary(session, row.id, row.optuna_study_id, spec),
    }
    objectives = best.user_attrs.get(TrialAttr.OBJECTIVES)
    if model is not None:  # the stored model is the re-created best trial (or winner): report its numbers
        return BestPublic(
            **study,
            trial_number=model.trial_number,
            # not the search's best: the selection's winner, a tie, or a trial that finished after finalize
            value=best.value if model.trial_number == best.number else model.metrics.get("trial_value"),
            objectives=objectives,
            params=model.params,
            hyperparameters=model.hyperparameters,
            val_metrics=model.metrics.get("val"),
            test_metrics=model.metrics.get("test"),
            model=_model_public(model, row.name),
            baselines=model.metrics.get("baselines"),
            versus_baseline=model.metrics.get("versus_baseline"),
            warnings=model.metrics.get("warnings") or [],
        )
    val_metrics = best.user_attrs.get(TrialAttr.VAL_METRICS)
    if val_metrics is not None and spec.metric == "val_loss":
        val_metrics = {"loss": best.value, **val_metrics}
    return BestPublic(
        **study,
        trial_number=best.number,
        value=best.value,
        objectives=objectives,
        params=best.params,
        hyperparameters=hyperparameters(spec, best.params),
        val_metrics=val_metrics,
        test_metrics=None,
        model=None,
    )


def _model_public(model: ModelRow, study_name: str) -> ModelPublic:
    return ModelPublic(
        trial_number=model.trial_number,
        procedure=model.config.get("procedure", model_store.PROCEDURE),
        config={"model": model.config.get("model"), "train": model.config.get("train")},
        device=model.device,
        seconds=model.seconds,
        sha256=model.sha256,
        size=model.size,
        created_at=model.created_at,
        download=f"/v1/studies/{study_name}/best/model",
    )


@router.get("/{name}/pareto", responses={404: {"model": Problem}})
def get_pareto(name: str, session: SessionDep) -> ParetoPublic:
    """The Pareto front: each complete trial that no other beats on every objective, with its values and params."""
    row = study_or_404(session, name)
    spec = stored_spec(row)
    names, directions = spec.objective_names(), spec.directions()
    complete = results.complete_values(session, row.optuna_study_id)
    on_front = pareto.front_mask([values for _, values in complete], directions)
    values = {number: v for (number, v), on in zip(complete, on_front, strict=True) if on}
    trials = results.trials_by_number(session, row.optuna_study_id, list(values))
    return ParetoPublic(
        study=row.name,
        state=row.state,
        objectives=[ObjectivePublic(name=n, direction=d) for n, d in zip(names, directions, strict=True)],
        n_complete=len(complete),
        trials=[
            ParetoTrial(
                number=t.number,
                values=dict(zip(names, values[t.number], strict=True)),
                params=t.params,
                epochs=t.epochs,
            )
            for t in trials
        ],
    )


@router.get(
    "/{name}/best/model",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "a rnntune.save_model file"},
        404: {"model": Problem, "description": "no such study, or no model stored yet"},
    },
)
def download_model(name: str, session: SessionDep) -> Response:
    """The best model as one file: ``rnntune.models.load_model(path).predict(x)``."""
    row = study_or_404(session, name)
    content = model_store.model_content(session, row.id)
    model = model_store.get_model(session, row.id)
    if content is None or model is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"study {name!r} has no model yet (state {row.state}): it is stored when the budget is spent"
            + (f"; {row.reason}" if row.reason else ""),
        )
    return Response(
        content,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-best.pt"',
            "ETag": f'"{model.sha256}"',
            "X-Checksum-Sha256": model.sha256,
        },
    )


@router.get("/{name}/importances", responses={404: {"model": Problem}})
def get_importances(name: str, session: SessionDep, storage: StorageDep) -> ImportancesPublic:
    """Hyperparameter importances (PED-ANOVA, conditional parameters included); empty with a reason when too few trials."""
    row = study_or_404(session, name)
    study = optuna.load_study(study_name=row.name, storage=storage)
    return ImportancesPublic(study=row.name, **importance.param_importances(study, stored_spec(row)))


@router.get(
    "/{name}/trials.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per trial"}, 404: {"model": Problem}},
)
def trials_csv(name: str, request: Request, session: SessionDep) -> StreamingResponse:
    """Every trial as CSV: number, state, value, epochs, times, one column per searched parameter; once the model is stored, the baselines' test scores in the X-Rnntune-Baselines header."""
    row = study_or_404(session, name)
    param_names = list(stored_spec(row).search_space)
    headers = {"Content-Disposition": f'attachment; filename="{name}-trials.csv"'}
    model = model_store.get_model(session, row.id)
    if model is not None and model.metrics.get("baselines"):  # the bar the trials' winner had to clear
        key = (model.metrics.get("versus_baseline") or {}).get("metric", "test loss").removeprefix("test ")
        scores = {k: (b.get("test") or {}).get(key) for k, b in model.metrics["baselines"].items()}
        headers["X-Rnntune-Baselines"] = json.dumps({"metric": f"test {key}", **scores}, separators=(",", ":"))
        line = (model.metrics.get("versus_baseline") or {}).get("line")
        if line:
            headers["X-Rnntune-Versus-Baseline"] = line
    return StreamingResponse(
        _csv_rows(request.app.state.sessions, row.optuna_study_id, param_names),
        media_type="text/csv",
        headers=headers,
    )


def _csv_rows(sessions, optuna_study_id: int, param_names: list[str]) -> Iterator[str]:
    header = ["number", "state", "value", "epochs", "duration_s", "datetime_start", "datetime_complete"]
    header += [f"params_{p}" for p in param_names] + list(CSV_ATTRS)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(header)
    yield flush()
    after = None
    with sessions() as session:  # its own session: the response streams after the handler returns
        while True:
            page = results.trials_page(session, optuna_study_id, after=after, limit=CSV_PAGE)
            for t in page:
                attrs = t.user_attrs
                writer.writerow(
                    [t.number, t.state, _cell(t.value), t.epochs, _cell(t.duration_s),
                     _cell(t.datetime_start), _cell(t.datetime_complete)]
                    + [_cell(t.params.get(p)) for p in param_names]
                    + [_cell(attrs.get(a)) for a in CSV_ATTRS]
                )  # fmt: skip
            if page:
                yield flush()
            if len(page) < CSV_PAGE:
                return
            after = page[-1].number


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
