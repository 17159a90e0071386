"""What a finished study's result says beside its model: the simple baselines on the same
split and the one-line verdict against them (``rnntune.models.baselines``, docs/baselines.md),
and how far the winner can be trusted (a small val split). Torch-free; the model file and the
study's attributes (:mod:`rnntune.service.trials.finalize`) carry what it returns."""

from __future__ import annotations

import logging
import math
from typing import Any

from rnntune.service.spec import StudySpec
from rnntune.service.trials.recipe import METRIC_KEYS

log = logging.getLogger("rnntune.finalize")


def measure_baselines(spec: StudySpec, data, test: dict[str, float] | None) -> tuple[dict[str, Any], dict[str, Any]]:
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
    return json_safe(baselines), json_safe(versus(metric_key(spec), test, baselines))


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


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
