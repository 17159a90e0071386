"""The stored model of a finished study: re-create one trial (same config and seed, train split,
up to its best epoch; :mod:`rnntune.service.trials.finalize` says why), evaluate it once on val and once
on test, and write the ``rnntune.models.save_model`` file with the scaler, the configs, the metrics
and what the result says beside it (:mod:`rnntune.service.trials.final_report`). Worker side: torch is
imported on first use."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rnntune.service import __version__
from rnntune.service.spec import StudySpec
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.model_store import PROCEDURE
from rnntune.service.trials.final_report import json_safe, measure_baselines, result_warnings
from rnntune.service.trials.outcome import Interrupted
from rnntune.service.trials.recipe import Recipe, TrialRecord, metric_value

if TYPE_CHECKING:
    from rnntune.models.train import EpochResult, FitResult
    from rnntune.service.data.data_cache import DataCache

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
        metrics=json_safe(metrics),
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
    best_epoch = trial.user_attrs.get(TrialAttr.BEST_EPOCH)

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
    baselines, versus = measure_baselines(spec, data, test)
    return {
        "metric": spec.metric,
        "trial_value": trial.value,
        "trial_val_metrics": trial.user_attrs.get(TrialAttr.VAL_METRICS),  # as the trial reported them
        "val": val,  # of the stored weights (the same model, so the same numbers up to float noise)
        "test": test,
        "val_reproduced": {
            "trial": trial.value,
            "model": reproduced,
            "abs_diff": abs(reproduced - trial.value) if trial.value is not None else None,
        },
        "naive_val_loss": trial.user_attrs.get(TrialAttr.NAIVE_VAL_LOSS),
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
                "trial_objectives": trial.user_attrs.get(TrialAttr.OBJECTIVES),
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


def _selection_meta(chosen: dict[str, Any]) -> dict[str, Any]:
    """What a model file keeps of the selection: the rule, each candidate's runs, the winner."""
    keys = ("trial", "params", "mean", "sd", "n", "values", "failed")
    return json_safe(
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
