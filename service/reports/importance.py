"""Which hyperparameters mattered: Optuna's PED-ANOVA over a study's complete trials.

``optuna.importance.get_param_importances`` defaults to PED-ANOVA in Optuna 5, which assesses
conditional parameters too (``momentum`` only where ``optimizer`` is sgd): each one is scored
over the trials in which it was suggested. PED-ANOVA compares the top ``target_quantile`` of the
trials with all of them; with few trials we widen that quantile so that at least two trials are
"top", and say so. It needs every complete trial of the study, so this is an on-demand request,
not part of the status path.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna

from rnntune.service.spec import StudySpec
from rnntune.service.store.attrs import TrialAttr

MIN_TRIALS = 3  # fewer complete trials: no answer, and a reason
STABLE_TOP = 5  # Optuna's advice: at least this many trials in the top quantile
DEFAULT_QUANTILE = 0.1


def param_importances(study: optuna.Study, spec: StudySpec) -> dict[str, Any]:
    """{"n_trials", "target_quantile", "importances": {param: share}, "params": [...], "reason", "notes"}."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if any(TrialAttr.WARM_START_FROM in t.user_attrs for t in complete):  # a warm start's history is not this study's
        complete = [t for t in complete if TrialAttr.WARM_START_FROM not in t.user_attrs]
        study = optuna.create_study(directions=study.directions)
        study.add_trials(complete)
    n = len(complete)
    out: dict[str, Any] = {
        "evaluator": "PedAnovaImportanceEvaluator",
        "n_trials": n,
        "target_quantile": None,
        "importances": {},
        "params": [],
        "reason": None,
        "notes": [],
    }
    if n < MIN_TRIALS:
        out["reason"] = (
            f"too few trials: importances need at least {MIN_TRIALS} complete trials, and this study has {n}"
        )
        return out
    quantile = min(0.5, max(DEFAULT_QUANTILE, 2 / n))
    n_top = max(1, math.ceil(quantile * n - 1e-9))  # as PED-ANOVA's quantile filter counts
    out["target_quantile"] = round(quantile, 4)
    if quantile > DEFAULT_QUANTILE:
        out["notes"].append(
            f"few trials: the top {quantile:.0%} ({n_top} of {n}) are compared with all, not the top 10%"
        )
    if n_top < STABLE_TOP:
        out["notes"].append(
            f"rough: PED-ANOVA is stable with at least {STABLE_TOP} trials in the top quantile, here {n_top}"
        )
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    out["notes"] += sorted({str(w.message) for w in caught if "experimental" not in str(w.message).lower()})
    present = {name: sum(name in t.params for t in complete) for name in values}
    out["importances"] = {name: float(v) for name, v in values.items()}
    for name, value in values.items():
        param = spec.search_space.get(name)
        out["params"].append(
            {
                "name": name,
                "importance": float(value),
                "n_trials": present[name],
                "when": param.when_values() if param is not None and param.when else None,
            }
        )
    return out
