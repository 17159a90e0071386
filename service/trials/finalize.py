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
seeds and folds, ``service/trials/selection.py``) instead of the single best, and the model file's
metadata says what was chosen and why.

This module picks the trial and stores the result; :mod:`rnntune.service.trials.final_model` re-creates
and measures the model and writes its file, :mod:`rnntune.service.trials.final_report` adds the baselines,
the verdict against them and the warnings. Their public names are importable from here too.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import optuna
from sqlalchemy.orm import sessionmaker

from rnntune.service.reports import results
from rnntune.service.spec import StudySpec
from rnntune.service.store import optuna_compat
from rnntune.service.store.attrs import StudyAttr, TrialAttr
from rnntune.service.store.model_store import PROCEDURE, store
from rnntune.service.store.tables import ModelRow
from rnntune.service.trials import selection
from rnntune.service.trials.final_model import BuiltModel, build_model
from rnntune.service.trials.final_report import json_safe, metric_key, result_warnings, small_val_warning
from rnntune.service.trials.outcome import Interrupted
from rnntune.service.trials.recipe import TrialRecord

if TYPE_CHECKING:
    from rnntune.service.data.data_cache import DataCache

__all__ = [
    "BuiltModel",
    "best_trial",
    "build_model",
    "finalize_study",
    "metric_key",
    "result_warnings",
    "small_val_warning",
]

log = logging.getLogger("rnntune.finalize")


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
                if TrialAttr.WARM_START_FROM not in t.user_attrs and t.value is not None and math.isfinite(t.value)
            ]
            if not own:
                raise ValueError("no trial is complete")
            one = -1.0 if spec.direction == "maximize" else 1.0
            return TrialRecord.of(min(own, key=lambda t: (one * t.values[0], t.number)))
        with sessions() as session:
            found = results.top_trials(session, optuna_compat.study_id(study), spec.directions()[0], 1)
        if not found:
            raise ValueError("no trial is complete")
        return TrialRecord(found[0].number, found[0].params, found[0].value, found[0].user_attrs)
    sign = [-1.0 if d == "maximize" else 1.0 for d in spec.directions()]
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None
        and all(math.isfinite(v) for v in t.values)
        and TrialAttr.WARM_START_FROM not in t.user_attrs
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
    study.set_user_attr(StudyAttr.TEST_METRICS, json_safe(built.test))
    study.set_user_attr(
        StudyAttr.BASELINES,
        json_safe({k: b.get("test") or {"skipped": b.get("skipped")} for k, b in built.baselines.items()}),
    )
    study.set_user_attr(StudyAttr.VERSUS_BASELINE, built.versus["line"] if built.versus else None)
    study.set_user_attr(StudyAttr.WARNINGS, built.warnings)
    study.set_user_attr(
        StudyAttr.BEST_MODEL, {"trial": best.number, "sha256": row.sha256, "size": row.size, "procedure": PROCEDURE}
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
