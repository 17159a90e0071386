"""The result a user takes home: the best trial's model, tested once, stored in the database.

When a study's budget is spent, the queue hands one worker a ``finalize`` ticket and the worker
calls :func:`finalize_study`. It rebuilds the best trial's hyperparameters exactly as the
objective did (``recipe.Recipe``, the one path that builds and trains a trial), trains that
configuration again on the **train split with the same seed, up to the trial's best epoch**,
evaluates the weights once on the val split and once on the test split, and stores one
``rnntune.models.save_model`` file with the scaler, the configs and the metrics in ``rnntune_models``.

Why re-create the best trial's checkpoint rather than retrain on train + val:

- The weights a user downloads are the ones whose validation loss won the search; the val
  metrics shown next to the test metrics describe that model, not a cousin of it.
- ``fit`` is deterministic for a given config, seed and device, so training to the trial's
  ``best_epoch`` reproduces its best-epoch weights bit for bit on CPU (and to within float
  noise on a GPU): the stored ``val`` loss equals the trial's value, which checks that the
  params -> config path is the one that was tuned (``metrics.val_reproduced`` says how close).
- Retraining on train + val has no held-out data to pick the epoch, early-stop, or drive the
  ``plateau`` schedule, and an epoch count found on the smaller set does not transfer cleanly
  (more steps per epoch). Keeping every trial's weights instead would cost one model file per
  trial in the database.

The price: the val split (15% of the data) is not used to fit the final weights. The whole step
costs at most one trial's training time.

With a spec's ``selection``, the trial re-created is the re-evaluated winner (the best mean over
seeds and folds, ``service/selection.py``) instead of the single best, and the model file's
metadata says what was chosen and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import optuna
from sqlalchemy.orm import sessionmaker

from rnntune.service import __version__, optuna_compat, results, selection
from rnntune.service.model_store import PROCEDURE, store
from rnntune.service.outcome import Interrupted
from rnntune.service.recipe import METRIC_KEYS, Recipe, TrialRecord, metric_value
from rnntune.service.spec import StudySpec
from rnntune.service.tables import ModelRow

if TYPE_CHECKING:
    from rnntune.models.train import EpochResult, FitResult
    from rnntune.service.data_cache import DataCache

log = logging.getLogger("rnntune.finalize")

DATA_META_KEYS = (
    "kind",
    "window",
    "horizon",
    "inputs",
    "target",
    "target_index",
    "split",
    "source",
    "frequency",
    "labels",
    "vocab_size",
    "max_length",
)
TEST_ATTR = "rnntune_test_metrics"
MODEL_ATTR = "rnntune_best_model"
BASELINES_ATTR = "rnntune_baselines"  # {baseline: its test metrics}: the dashboard shows study attributes
VERSUS_ATTR = "rnntune_versus_baseline"  # one line: does the tuned model beat the best baseline on test
WARNINGS_ATTR = "rnntune_warnings"


@dataclasses.dataclass
class BuiltModel:
    """A re-created trial's model file and what was measured of it."""

    content: bytes
    metrics: dict[str, Any]
    hyperparameters: dict[str, Any]
    config: dict[str, Any]
    device: str
    test: dict[str, float] | None
    baselines: dict[str, Any] = dataclasses.field(default_factory=dict)
    versus: dict[str, Any] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def best_trial(study: optuna.Study, spec: StudySpec, sessions: sessionmaker | None = None) -> TrialRecord:
    """The trial whose model a finished study stores: the best value, ties broken by the lower
    val loss, then fewer parameters (``results.tie_key``, what ``GET …/best`` and the selection's
    candidates use too). Several objectives: the best on the first (ties: better on the next
    ones, then the earliest), which is always on the Pareto front."""
    if not spec.multi_objective:
        if sessions is None:
            own = [
                t
                for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if results.WARM_ATTR not in t.user_attrs and t.value is not None and math.isfinite(t.value)
            ]
            if not own:
                raise ValueError("no trial is complete")
            one = -1.0 if spec.direction == "maximize" else 1.0
            return TrialRecord.of(min(own, key=lambda t: (one * t.values[0], t.number)))
        with sessions() as session:
            found = results.top_trials(session, optuna_compat.study_id(study), spec.directions()[0], 1)
        if not found:
            raise ValueError("no trial is complete")
        return TrialRecord.from_dict(found[0])
    sign = [-1.0 if d == "maximize" else 1.0 for d in spec.directions()]
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None and all(math.isfinite(v) for v in t.values) and results.WARM_ATTR not in t.user_attrs
    ]
    if not complete:
        raise ValueError("no trial is complete")
    best = min(complete, key=lambda t: ([s * v for s, v in zip(sign, t.values, strict=True)], t.number))
    return TrialRecord.of(best)


def finalize_study(
    *,
    spec: StudySpec,
    study: optuna.Study,
    study_id: int,
    sessions: sessionmaker,
    device: str,
    data_cache: DataCache,
    stop: threading.Event,
) -> None:
    """Re-create the best trial's model, test it once, store it (see the module docstring).

    Raises on failure (no complete trial, broken data, training error); the worker retries or
    records the reason. ``stop`` is honoured at epoch boundaries (raises ``Interrupted``)."""
    started = time.monotonic()
    best = best_trial(study, spec, sessions)
    chosen = None
    if not spec.selection.is_default:  # the re-evaluated winner, and why
        with sessions() as session:
            chosen = selection.summary(session, study_id, optuna_compat.study_id(study), spec)
        best = _winner(study, chosen, best)
    built = build_model(spec, best, device=device, data_cache=data_cache, stop=stop, chosen=chosen)
    if stop.is_set():
        raise Interrupted("finalize stopped before the model was stored")
    row = ModelRow(
        study_id=study_id,
        trial_number=best.number,
        params=best.params,
        hyperparameters=built.hyperparameters,
        metrics=built.metrics,
        config=built.config,
        device=built.device,
        seconds=round(time.monotonic() - started, 3),
        sha256=hashlib.sha256(built.content).hexdigest(),
        size=len(built.content),
        content=built.content,
    )
    row.metric = _version_metric(best, chosen)
    with sessions() as session:
        current = store(session, row, spec.directions()[0])
    if not current:  # an extension that found nothing better: the earlier version stays what users get
        log.info("study %s: model of trial %d stored as a previous version (not better)", spec.name, best.number)
        return
    study.set_user_attr(TEST_ATTR, _json_safe(built.test))
    study.set_user_attr(
        BASELINES_ATTR,
        _json_safe({k: b.get("test") or {"skipped": b.get("skipped")} for k, b in built.baselines.items()}),
    )
    study.set_user_attr(VERSUS_ATTR, built.versus["line"] if built.versus else None)
    study.set_user_attr(WARNINGS_ATTR, built.warnings)
    study.set_user_attr(
        MODEL_ATTR, {"trial": best.number, "sha256": row.sha256, "size": row.size, "procedure": PROCEDURE}
    )
    log.info(
        "study %s: best trial %d re-created; val %s, test %s", spec.name, best.number, built.metrics["val"], built.test
    )


def _version_metric(best: TrialRecord, chosen: dict[str, Any] | None) -> float | None:
    """What a model version is compared on (``model_store``): the selection winner's mean over its
    runs, or the trial's own value (several objectives: the first's)."""
    if chosen is not None and chosen["winner"] == best.number:
        mean = next((c["mean"] for c in chosen["candidates"] if c["trial"] == best.number), None)
        if mean is not None:
            return float(mean)
    return best.value if best.value is not None and math.isfinite(best.value) else None


def _winner(study: optuna.Study, chosen: dict[str, Any] | None, best: TrialRecord) -> TrialRecord:
    """The selection's winner as a TrialRecord (the search's best when it is the winner, or
    when no candidate has a value: the selection then records why)."""
    if chosen is None or chosen["winner"] is None or chosen["winner"] == best.number:
        return best
    trial_id = next(c["trial_id"] for c in chosen["candidates"] if c["trial"] == chosen["winner"])
    return TrialRecord.of(optuna_compat.storage(study).get_trial(trial_id))


def build_model(
    spec: StudySpec,
    trial: TrialRecord,
    *,
    device: str,
    data_cache: DataCache,
    stop: threading.Event,
    chosen: dict[str, Any] | None = None,
) -> BuiltModel:
    """Re-create ``trial``'s model as the module docstring says (same config and seed, train
    split, up to its best epoch), evaluate it once on val and once on test, and write the model
    file. The finalize step runs it for the best trial, or the re-evaluated winner (``chosen``:
    the study's ``selection.summary``, what was chosen and why, kept in the file's metadata);
    ``rnntune export --trial N`` for another (a Pareto-optimal trial of a study with several
    objectives)."""
    recipe = Recipe.of_trial(spec, trial, data_cache, device=device)
    result = _retrain(recipe, trial, stop)
    metrics = _measure(recipe, trial, result)
    content = _model_file(recipe, trial, result, metrics, chosen)
    return BuiltModel(
        content=content,
        metrics=_json_safe(metrics),
        hyperparameters=recipe.hp,
        config={"model": _asdict(recipe.model_config), "train": _asdict(recipe.train_config), "procedure": PROCEDURE},
        device=result.device,
        test=metrics["test"],
        baselines=metrics["baselines"],
        versus=metrics["versus_baseline"],
        warnings=metrics["warnings"],
    )


def _retrain(recipe: Recipe, trial: TrialRecord, stop: threading.Event) -> FitResult:
    """Train ``recipe`` up to the trial's best epoch (all epochs when it recorded none)."""
    best_epoch = trial.user_attrs.get("best_epoch")

    def on_epoch_end(result: EpochResult) -> bool:
        if stop.is_set():
            raise Interrupted(f"finalize stopped at epoch {result.epoch}")
        return best_epoch is not None and result.epoch >= best_epoch

    result = recipe.fit(on_epoch_end, should_stop=stop.is_set)
    if best_epoch is not None and result.best_epoch != best_epoch:
        log.warning(
            "study %s: the re-created trial %d peaked at epoch %d, the original at %d",
            recipe.spec.name, trial.number, result.best_epoch, best_epoch,
        )  # fmt: skip
    return result


def _measure(recipe: Recipe, trial: TrialRecord, result: FitResult) -> dict[str, Any]:
    """The re-created model's val and test metrics, the baselines on the same split, and how
    close the val value came to the trial's."""
    import numpy as np
    import torch

    from rnntune.models.train import evaluate

    spec, data, batch = recipe.spec, recipe.data, recipe.train_config.eval_batch_size
    model = recipe.model(result)
    val = evaluate(model, data.x_val, data.y_val, data.task, batch, data.lengths_val)
    test = None
    if len(data.x_test):
        test = evaluate(model, data.x_test, data.y_test, data.task, batch, data.lengths_test)
        test.update(_original_units(model, data, batch, np, torch))
        # the bar to beat on the same windows (last value / train mean / class frequencies)
        test["naive_loss"] = dataclasses.replace(
            data, x_val=data.x_test, y_val=data.y_test, lengths_val=data.lengths_test
        ).naive_val_loss()
    reproduced = _metric(spec, val)
    baselines, versus = _baselines(spec, data, test)
    return {
        "metric": spec.metric,
        "trial_value": trial.value,
        "trial_val_metrics": trial.user_attrs.get("val_metrics"),  # as the trial reported them
        "val": val,  # of the stored weights (the same model, so the same numbers up to float noise)
        "test": test,
        "val_reproduced": {
            "trial": trial.value,
            "model": reproduced,
            "abs_diff": abs(reproduced - trial.value) if trial.value is not None else None,
        },
        "naive_val_loss": trial.user_attrs.get("naive_val_loss"),
        "n_train": len(data.x_train),
        "n_val": len(data.x_val),
        "n_test": len(data.x_test),
        "best_epoch": result.best_epoch,
        "baselines": baselines,
        "versus_baseline": versus,
        "warnings": result_warnings(len(data.y_val), spec),
    }


def _data_meta(recipe: Recipe) -> dict[str, Any]:
    spec, data = recipe.spec, recipe.data
    assert spec.data is not None  # a recipe trains the built-in way, on the spec's data
    data_meta = {k: data.meta[k] for k in DATA_META_KEYS if k in data.meta}
    if spec.data.dataset is not None:  # the local copy is named by its sha256: name the upload
        data_meta["source"] = f"dataset {spec.data.dataset!r} ({data.meta.get('source', '')})"
    if data.n_classes is not None:
        data_meta["n_classes"] = data.n_classes
    return data_meta


def _model_file(
    recipe: Recipe, trial: TrialRecord, result: FitResult, metrics: dict[str, Any], chosen: dict[str, Any] | None
) -> bytes:
    """The model file (``rnntune.models.save_model``): weights, configs, scaler and metadata."""
    from rnntune.models.checkpoint import save_model

    spec, data = recipe.spec, recipe.data
    meta = {
        "study": spec.name,
        "trial_number": trial.number,
        "metric": spec.metric,
        "direction": spec.direction,
        "params": trial.params,
        "hyperparameters": recipe.hp,
        "data": spec.data.model_dump(mode="json") if spec.data is not None else None,
        "data_meta": _data_meta(recipe),
        "val_metrics": metrics["val"],
        "test_metrics": metrics["test"],
        "baselines": metrics["baselines"],
        "versus_baseline": metrics["versus_baseline"],
        "warnings": metrics["warnings"],
        "procedure": PROCEDURE,
        **(
            {
                "objectives": dict(zip(spec.objective_names(), spec.directions(), strict=True)),
                "trial_objectives": trial.user_attrs.get("objectives"),
            }
            if spec.multi_objective
            else {}
        ),
        **({"selection": _selection_meta(chosen)} if chosen is not None else {}),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rnntune_version": __version__,
    }
    buffer = io.BytesIO()
    save_model(
        buffer,
        recipe.model_config,
        result.state_dict,
        train_config=recipe.train_config,
        scaler=data.scaler,
        meta=meta,
        text=data.text,
        plugin=recipe.factory.record() if recipe.factory is not None else None,
    )
    return buffer.getvalue()


def _baselines(spec: StudySpec, data, test: dict[str, float] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The simple models on this split (``rnntune.models.baselines``) and the one-line verdict
    on the study's metric's test counterpart."""
    from rnntune.models.baselines import fit_baselines, versus
    from rnntune.service.config import get_settings

    try:
        baselines = fit_baselines(
            data, period=data.meta.get("period"), max_elements=get_settings().baseline_max_elements
        )
    except Exception as exc:  # a baseline never costs the user the tuned model
        log.warning("study %s: baselines failed: %s: %s", spec.name, type(exc).__name__, exc)
        baselines = {"error": {"skipped": f"{type(exc).__name__}: {exc}"}}
    return _json_safe(baselines), _json_safe(versus(metric_key(spec), test, baselines))


def metric_key(spec: StudySpec) -> str:
    """The metrics key (``loss``, ``mae``, ``accuracy``, ``f1``) of the study's (first) val metric."""
    return METRIC_KEYS.get(spec.objective_names()[0], "loss")


def result_warnings(n_val: int, spec: StudySpec, threshold: int | None = None) -> list[str]:
    """What a user should know about how far a study's winner can be trusted: a small val split
    (``RNNTUNE_SMALL_VAL_SPLIT``) without a selection over folds."""
    from rnntune.service.config import get_settings

    threshold = get_settings().small_val_split if threshold is None else threshold
    if n_val >= threshold or spec.selection.folds > 1:
        return []
    return [small_val_warning(n_val, threshold)]


def small_val_warning(n_val: int, threshold: int) -> str:
    return (
        f"the val split holds {n_val} samples (fewer than {threshold}, RNNTUNE_SMALL_VAL_SPLIT): trials tie and "
        "the best val score is partly luck; add selection: {top_k: 3, folds: 5} to re-evaluate the best "
        "trials over k-fold (or rolling-origin) val splits"
    )


def _selection_meta(chosen: dict[str, Any]) -> dict[str, Any]:
    """What a model file keeps of the selection: the rule, each candidate's runs, the winner."""
    keys = ("trial", "params", "mean", "sd", "n", "values", "failed")
    return _json_safe(
        {
            **{k: chosen[k] for k in ("top_k", "seeds", "folds", "rule", "winner", "search_best")},
            "candidates": [{k: c[k] for k in keys} for c in chosen["candidates"]],
        }
    )


def _metric(spec: StudySpec, metrics: dict[str, float]) -> float:
    from rnntune.models.train import EpochResult

    return metric_value(
        spec, EpochResult(0, math.nan, metrics["loss"], {k: v for k, v in metrics.items() if k != "loss"}, 0.0)
    )


def _original_units(model, data, batch_size: int, np, torch) -> dict[str, float]:
    """Regression with a fitted scaler: the test errors in the data's own units."""
    scaler = data.scaler or {}
    if data.task != "regression" or "y_std" not in scaler:
        return {}
    device = next(model.parameters()).device
    x = torch.as_tensor(data.x_test, device=device)
    lengths = None if data.lengths_test is None else torch.as_tensor(data.lengths_test)
    with torch.no_grad():
        out = torch.cat(
            [
                model(x[i : i + batch_size], *(() if lengths is None else (lengths[i : i + batch_size],))).float().cpu()
                for i in range(0, len(x), batch_size)
            ]
        ).numpy()
    y_std = np.asarray(scaler["y_std"])  # differences need the scale only, not the mean
    error = (out.astype(np.float64) - data.y_test.astype(np.float64)) * y_std  # (N, K), original units
    mse = float(np.mean(error**2))
    return {"mse_original": mse, "rmse_original": math.sqrt(mse), "mae_original": float(np.mean(np.abs(error)))}


def _asdict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
