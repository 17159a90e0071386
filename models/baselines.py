"""Simple models on the very split a study's trials used: the bar a tuned RNN must clear.

:func:`fit_baselines` fits each baseline that applies to a ``SequenceData`` on its train split,
picks its one regularisation strength on the val split (as the search picks the RNN's
hyperparameters on val) and scores it on val and test with the metrics ``models.train.evaluate``
reports, in the same units (scaled MSE for scaled regression, cross-entropy for classification):

- forecasting (``meta["kind"] == "forecasting"``): ``persistence`` (the last observed target value
  for every horizon step), ``seasonal_naive`` (the value one ``period`` earlier, when a period is
  known and fits in the window) and ``ridge_ar`` (a ridge linear autoregression on the whole
  window, one output per horizon step);
- other regression: ``mean`` (the train mean) and ``ridge`` on the flattened sequences;
- numeric classification: ``majority`` (the most frequent train class; its loss is that of the
  train class frequencies) and ``logistic`` (a logistic regression on the flattened, padded
  sequences, standardised; with ``lengths``, the steps beyond each sequence's own are zeros);
- text: ``majority`` and ``bow_logistic`` (a logistic regression on bag-of-words token counts).

:func:`versus` says in one line whether a tuned model's test score beats the best of them.

numpy and scikit-learn only (no torch, no service code): the finalize step calls it on a worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rnntune.models.data.container import SequenceData

RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
LOGISTIC_CS = (0.01, 0.1, 1.0, 10.0)
DEFAULT_MAX_ELEMENTS = 2**25  # values in one design matrix (train rows x features)
Fit = Callable[..., dict[str, Any]]  # (data, *, period, max_elements) -> a baseline's result
Predict = Callable[[str], np.ndarray]  # a split's name -> its predictions (or probabilities)
LOWER_IS_BETTER = {"loss": True, "mae": True, "mse_original": True, "accuracy": False, "f1": False}


def fit_baselines(
    data: SequenceData, *, period: int | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> dict[str, dict[str, Any]]:
    """{name: {"val": metrics, "test": metrics or None, "params": what was fitted, "seconds"}}
    for every baseline that applies to ``data`` (module docstring); a baseline that cannot be
    fitted says why in ``{"skipped": reason}``. ``period``: forecasting's season length in steps."""
    fits: dict[str, Fit]
    if data.task == "classification":
        fits = {"majority": _majority}
        fits["bow_logistic" if data.text is not None else "logistic"] = _logistic
    elif data.meta.get("kind") == "forecasting":
        fits = {"persistence": _persistence, "seasonal_naive": _seasonal, "ridge_ar": _ridge}
    else:
        fits = {"mean": _mean, "ridge": _ridge}
    out: dict[str, dict[str, Any]] = {}
    for name, fit in fits.items():
        started = time.perf_counter()
        result = fit(data, period=period, max_elements=max_elements)
        if "skipped" not in result:
            result["seconds"] = round(time.perf_counter() - started, 3)
        out[name] = result
    return out


# --- scoring ---------------------------------------------------------------------------------


def _regression_metrics(data: SequenceData, predicted: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MSE and MAE in the model's units, as ``evaluate``; with a scaler, the MSE in the data's own."""
    error = predicted.astype(np.float64) - y.astype(np.float64)  # (N, K)
    out = {"loss": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}
    scaler = data.scaler or {}
    if "y_std" in scaler:
        out["mse_original"] = float(np.mean((error * np.asarray(scaler["y_std"])) ** 2))
    return out


def _classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Cross-entropy, accuracy and macro-F1 (over the classes in y or the predictions), as ``evaluate``."""
    from sklearn.metrics import f1_score

    predicted = probs.argmax(axis=1)
    picked = np.clip(probs[np.arange(len(y)), y], 1e-12, None)
    return {
        "loss": float(-np.mean(np.log(picked))),
        "accuracy": float(np.mean(predicted == y)),
        "f1": float(f1_score(y, predicted, average="macro")),
    }


def _splits(data: SequenceData) -> list[str]:
    return ["val", "test"] if len(data.x_test) else ["val"]


def _scored(data: SequenceData, predict: Predict, params: dict[str, Any]) -> dict[str, Any]:
    """Score ``predict(split) -> predictions`` on val and test (None when there is no test split)."""
    metrics = _classification_metrics if data.task == "classification" else None
    out: dict[str, Any] = {"params": params, "test": None}
    for split in _splits(data):
        y = getattr(data, f"y_{split}")
        predicted = predict(split)
        out[split] = metrics(predicted, y) if metrics else _regression_metrics(data, predicted, y)
    return out


# --- the baselines ---------------------------------------------------------------------------


def _persistence(data: SequenceData, **_: Any) -> dict[str, Any]:
    target = data.meta["target_index"]

    def predict(split: str) -> np.ndarray:
        x = getattr(data, f"x_{split}")
        return np.repeat(x[:, -1, target][:, None], data.output_size, axis=1)  # (N, horizon)

    return _scored(data, predict, {"rule": "the last observed target value, repeated for each horizon step"})


def _seasonal(data: SequenceData, *, period: int | None, **_: Any) -> dict[str, Any]:
    """Step h (1-based) of the horizon takes the window's value k * period steps before it, the
    smallest k >= ceil(h / period) that lands inside the observed window."""
    if period is None:
        return {"skipped": "no seasonal period (set data.params.period)"}
    window, horizon, target = data.window, data.output_size, data.meta["target_index"]
    if period > window:
        return {"skipped": f"the period {period} is longer than the window {window}"}
    # index in the window of the last observed value of step h's season
    index = [window - 1 + h - period * math.ceil(h / period) for h in range(1, horizon + 1)]

    def predict(split: str) -> np.ndarray:
        return np.asarray(getattr(data, f"x_{split}")[:, index, target])  # (N, horizon)

    return _scored(data, predict, {"period": period})


def _mean(data: SequenceData, **_: Any) -> dict[str, Any]:
    mean = data.y_train.astype(np.float64).mean(axis=0)

    def predict(split: str) -> np.ndarray:
        return np.broadcast_to(mean, getattr(data, f"y_{split}").shape).copy()

    return _scored(data, predict, {"rule": "the train split's mean target"})


def _majority(data: SequenceData, **_: Any) -> dict[str, Any]:
    """The most frequent train class (first by index on a tie); its probabilities are the train
    class frequencies, so its loss is the cross-entropy of a model that learned nothing."""
    n_classes = data.output_size
    counts = np.bincount(data.y_train, minlength=n_classes).astype(np.float64)
    probs = counts / counts.sum()
    majority = int(np.argmax(probs))

    def predict(split: str) -> np.ndarray:
        return np.broadcast_to(probs, (len(getattr(data, f"y_{split}")), n_classes)).copy()

    return _scored(data, predict, {"class": majority, "train_frequency": float(probs[majority])})


def _flat(data: SequenceData, split: str) -> np.ndarray:
    """(N, T * F): the padded sequence, steps beyond a variable-length sequence's own set to 0."""
    x: np.ndarray = getattr(data, f"x_{split}")
    lengths = getattr(data, f"lengths_{split}")
    if lengths is not None:
        x = np.where(np.arange(x.shape[1])[None, :, None] < lengths[:, None, None], x, 0.0)
    return x.reshape(len(x), -1).astype(np.float64)


def _too_big(data: SequenceData, max_elements: int) -> str | None:
    n = int(np.prod(data.x_train.shape))
    if n > max_elements:
        return f"the train split holds {n} values, over the limit of {max_elements} (RNNTUNE_BASELINE_MAX_ELEMENTS)"
    return None


def _ridge(data: SequenceData, *, max_elements: int, **_: Any) -> dict[str, Any]:
    """Ridge on the flattened window (forecasting: a linear autoregression; one output per
    target column), its alpha picked on the val split's MSE."""
    from sklearn.linear_model import Ridge

    reason = _too_big(data, max_elements)
    if reason:
        return {"skipped": reason}
    x_train, x_val = _flat(data, "train"), _flat(data, "val")
    y_train, y_val = data.y_train.astype(np.float64), data.y_val.astype(np.float64)
    best: tuple[float, float, Any] | None = None
    for alpha in RIDGE_ALPHAS:
        model = Ridge(alpha=alpha).fit(x_train, y_train)
        mse = float(np.mean((_ridge_predict(model, x_val, y_val.shape) - y_val) ** 2))
        if best is None or mse < best[0]:
            best = (mse, alpha, model)
    assert best is not None
    alpha, model = best[1], best[2]

    def predict(split: str) -> np.ndarray:
        return _ridge_predict(model, _flat(data, split), getattr(data, f"y_{split}").shape)

    return _scored(data, predict, {"alpha": alpha, "alphas": list(RIDGE_ALPHAS), "features": x_train.shape[1]})


def _ridge_predict(model: Any, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The ridge's predictions as y's (N, K): scikit-learn returns (N,) for a one-column y, which
    against an (N, 1) y would broadcast to (N, N) and score every row against every target."""
    return np.asarray(model.predict(x)).reshape(shape)


def _bag_of_words(data: SequenceData, split: str) -> Any:
    """Token counts per row (N, vocab) as a sparse matrix; padding (beyond each length) left out."""
    from scipy.sparse import csr_matrix

    ids, lengths = getattr(data, f"x_{split}"), getattr(data, f"lengths_{split}")
    keep = np.arange(ids.shape[1])[None, :] < lengths[:, None]  # (N, T)
    rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)[keep]
    vocab = data.vocab_size
    assert vocab is not None
    return csr_matrix((np.ones(len(rows)), (rows, ids[keep])), shape=(len(ids), vocab))


def _logistic(data: SequenceData, *, max_elements: int, **_: Any) -> dict[str, Any]:
    """Logistic regression (lbfgs, multinomial) on standardised flattened sequences, or on
    bag-of-words counts for text; C picked on the val split's cross-entropy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    text = data.text is not None
    reason = None if text else _too_big(data, max_elements)
    if reason:
        return {"skipped": reason}
    design = _bag_of_words if text else _flat
    x_train, x_val = design(data, "train"), design(data, "val")
    n_classes = data.output_size
    best: tuple[float, float, Any] | None = None
    for c in LOGISTIC_CS:
        scaler = MaxAbsScaler() if text else StandardScaler()
        model = make_pipeline(scaler, LogisticRegression(C=c, max_iter=500)).fit(x_train, data.y_train)
        loss = _classification_metrics(_probs(model, x_val, n_classes), data.y_val)["loss"]
        if best is None or loss < best[0]:
            best = (loss, c, model)
    assert best is not None
    c, model = best[1], best[2]

    def predict(split: str) -> np.ndarray:
        return _probs(model, design(data, split), n_classes)

    features = "bag of words (token counts, max-abs scaled)" if text else "flattened padded sequence, standardised"
    return _scored(data, predict, {"C": c, "Cs": list(LOGISTIC_CS), "features": features})


def _probs(model: Any, x: Any, n_classes: int) -> np.ndarray:
    """(N, n_classes) probabilities; classes absent from the train split get 0."""
    out = np.zeros((x.shape[0], n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


# --- the verdict -----------------------------------------------------------------------------


def versus(key: str, model_test: dict[str, float] | None, baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Does the tuned model's test ``key`` ("loss", "mae", "accuracy" or "f1") beat the best
    baseline's? ``{"metric", "model", "best_baseline", "baseline", "beats", "difference",
    "relative", "line"}``; ``beats`` is None where there is nothing to compare."""
    lower = LOWER_IS_BETTER.get(key, True)
    scored = {
        name: b["test"][key]
        for name, b in baselines.items()
        if b.get("test") is not None and b["test"].get(key) is not None and math.isfinite(b["test"][key])
    }
    model = None if model_test is None else model_test.get(key)
    out: dict[str, Any] = {"metric": f"test {key}", "model": model, "best_baseline": None, "baseline": None}
    if model is None or not math.isfinite(model) or not scored:
        why = "no test split" if model_test is None else "no baseline has a test score"
        return {**out, "beats": None, "difference": None, "relative": None, "line": f"not compared: {why}"}
    name = min(scored, key=lambda n: scored[n] if lower else -scored[n])
    bar = scored[name]
    beats = model < bar if lower else model > bar
    difference = model - bar
    relative = abs(difference) / abs(bar) if bar else None
    how = f" ({relative:.1%} {'lower' if difference < 0 else 'higher'})" if relative is not None else ""
    verb = "beats" if beats else "does NOT beat"
    line = f"the tuned model {verb} the best baseline ({name}) on test {key}: {model:.4g} vs {bar:.4g}{how}"
    return {
        **out,
        "best_baseline": name,
        "baseline": bar,
        "beats": beats,
        "difference": difference,
        "relative": relative,
        "line": line,
    }
