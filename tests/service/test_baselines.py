"""Baselines in every result (issue 29): simple models fitted and scored on exactly the trials'
split, recomputed here by hand; shown by GET …/best, the study's user attributes, the trials CSV
and `rnntune status`; ties on the metric broken by val loss, then size."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from rnntune.models.baselines import RIDGE_ALPHAS, fit_baselines, versus
from rnntune.models.data import load_dataset
from rnntune.service.api.app import create_app
from rnntune.service.reports import results
from rnntune.service.worker import Worker
from tests.api_server import serving
from tests.conftest import REPO


def _ridge_by_hand(x: np.ndarray, y: np.ndarray, alpha: float):
    """Ridge with an unpenalised intercept: centre, solve (X'X + aI) w = X'y."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return lambda z: (z - x_mean) @ w + y_mean


def test_forecasting_baselines_are_the_hand_computed_ones_on_the_same_windows():
    data = load_dataset("sunspots", window=20, horizon=3)
    got = fit_baselines(data, period=11)
    assert list(got) == ["persistence", "seasonal_naive", "ridge_ar"]
    y_test = data.y_test.astype(np.float64)
    last = data.x_test[:, -1, 0].astype(np.float64)
    assert got["persistence"]["test"]["loss"] == pytest.approx(np.mean((y_test - last[:, None]) ** 2))
    # step h takes the value `period` steps before it: window index 19 + h - 11
    seasonal = data.x_test[:, [9, 10, 11], 0].astype(np.float64)
    assert got["seasonal_naive"]["test"]["loss"] == pytest.approx(np.mean((y_test - seasonal) ** 2))
    y_std = data.scaler["y_std"][0]
    assert got["seasonal_naive"]["test"]["mse_original"] == pytest.approx(np.mean((y_test - seasonal) ** 2) * y_std**2)

    flat = {
        s: getattr(data, f"x_{s}").reshape(len(getattr(data, f"x_{s}")), -1).astype(np.float64)
        for s in ("train", "val", "test")
    }
    val_mse = {}
    for alpha in RIDGE_ALPHAS:
        predict = _ridge_by_hand(flat["train"], data.y_train.astype(np.float64), alpha)
        val_mse[alpha] = float(np.mean((predict(flat["val"]) - data.y_val) ** 2))
    alpha = min(val_mse, key=val_mse.get)  # picked on val, as the search picks the RNN's
    assert got["ridge_ar"]["params"]["alpha"] == alpha
    assert got["ridge_ar"]["val"]["loss"] == pytest.approx(val_mse[alpha], rel=1e-6)
    predict = _ridge_by_hand(flat["train"], data.y_train.astype(np.float64), alpha)
    assert got["ridge_ar"]["test"]["loss"] == pytest.approx(
        float(np.mean((predict(flat["test"]) - y_test) ** 2)), rel=1e-6
    )


def test_ridge_ar_with_one_horizon_step_picks_its_alpha_on_the_val_mse_by_hand():
    # the search suite's sunspots task: window 24, horizon 1, so y is (N, 1)
    data = load_dataset("sunspots", window=24)
    got = fit_baselines(data, period=11)["ridge_ar"]
    flat = {s: getattr(data, f"x_{s}")[..., 0].astype(np.float64) for s in ("train", "val", "test")}
    y = {s: getattr(data, f"y_{s}").astype(np.float64) for s in ("train", "val", "test")}
    val_mse = {}
    for alpha in RIDGE_ALPHAS:
        predict = _ridge_by_hand(flat["train"], y["train"], alpha)
        val_mse[alpha] = float(np.mean((predict(flat["val"]) - y["val"]) ** 2))
    alpha = min(val_mse, key=val_mse.get)
    assert got["params"]["alpha"] == alpha
    assert got["val"]["loss"] == pytest.approx(val_mse[alpha], rel=1e-6)
    predict = _ridge_by_hand(flat["train"], y["train"], alpha)
    assert got["test"]["loss"] == pytest.approx(float(np.mean((predict(flat["test"]) - y["test"]) ** 2)), rel=1e-6)
    persistence = float(np.mean((flat["val"][:, -1:] - y["val"]) ** 2))
    assert got["val"]["loss"] < persistence  # a 24-lag autoregression beats the last value here


def test_a_period_longer_than_the_window_or_none_skips_the_seasonal_naive_saying_why():
    data = load_dataset("sine", {"n_series": 20, "length": 30}, window=8)
    assert data.meta["period"] is None
    assert "no seasonal period" in fit_baselines(data)["seasonal_naive"]["skipped"]
    assert "longer than the window 8" in fit_baselines(data, period=12)["seasonal_naive"]["skipped"]
    small = fit_baselines(data, max_elements=10)
    assert "RNNTUNE_BASELINE_MAX_ELEMENTS" in small["ridge_ar"]["skipped"]


def test_classification_baselines_majority_by_hand_and_a_logistic_regression():
    data = load_dataset("digits")
    got = fit_baselines(data)
    assert list(got) == ["majority", "logistic"]
    counts = np.bincount(data.y_train, minlength=10)
    majority = int(np.argmax(counts))
    assert got["majority"]["params"]["class"] == majority
    assert got["majority"]["test"]["accuracy"] == pytest.approx(np.mean(data.y_test == majority))
    freq = counts / counts.sum()
    assert got["majority"]["test"]["loss"] == pytest.approx(-np.mean(np.log(freq[data.y_test])))
    assert got["logistic"]["test"]["accuracy"] > 0.9  # digits are nearly linearly separable


def test_the_verdict_says_whether_and_by_how_much_the_model_beats_the_best_baseline():
    baselines = {"a": {"test": {"loss": 0.2}}, "b": {"test": {"loss": 0.168}}, "c": {"skipped": "no period"}}
    won = versus("loss", {"loss": 0.140}, baselines)
    assert won["beats"] is True and won["best_baseline"] == "b"
    assert won["line"] == "the tuned model beats the best baseline (b) on test loss: 0.14 vs 0.168 (16.7% lower)"
    lost = versus("accuracy", {"accuracy": 0.962}, {"logistic": {"test": {"accuracy": 0.981}}})
    assert lost["beats"] is False and "does NOT beat the best baseline (logistic)" in lost["line"]
    assert versus("loss", None, baselines)["beats"] is None


# --- through a study ---------------------------------------------------------------------------

SPEC = {
    "name": "base-sine",
    "data": {"name": "sine", "params": {"n_series": 30, "length": 30, "seed": 0, "period": 6}, "window": 12},
    "model": {"cell": "gru"},
    "search_space": {"hidden_size": {"type": "int", "low": 4, "high": 16}},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 2, "max_epochs": 2},
}


@pytest.fixture(scope="module")
def db_url(pg_url):
    return pg_url


@pytest.fixture(scope="module")
def finished(client, settings):
    assert client.post("/v1/studies", json=SPEC).status_code == 201
    Worker(settings, exit_when_idle=True, threads=1, device="cpu").run()
    return client.get(f"/v1/studies/{SPEC['name']}/best").json()


def test_the_result_holds_baselines_fitted_on_the_trials_split(finished, settings):
    best = finished
    data = load_dataset("sine", SPEC["data"]["params"], window=12)  # the split every trial used
    stored = best["baselines"]
    assert set(stored) == {"persistence", "seasonal_naive", "ridge_ar"}
    last = data.x_test[:, -1, 0].astype(np.float64)
    assert stored["persistence"]["test"]["loss"] == pytest.approx(np.mean((data.y_test - last[:, None]) ** 2))
    assert stored["persistence"]["test"]["loss"] == pytest.approx(best["test_metrics"]["naive_loss"])
    seasonal = data.x_test[:, 12 - 6, 0].astype(np.float64)  # horizon 1, period 6
    assert stored["seasonal_naive"]["test"]["loss"] == pytest.approx(np.mean((data.y_test[:, 0] - seasonal) ** 2))
    assert stored["ridge_ar"]["test"]["loss"] == pytest.approx(
        fit_baselines(data, period=6)["ridge_ar"]["test"]["loss"]
    )
    v = best["versus_baseline"]
    assert v["metric"] == "test loss" and v["model"] == pytest.approx(best["test_metrics"]["loss"])
    bar = min(b["test"]["loss"] for b in stored.values())
    assert v["baseline"] == pytest.approx(bar) and v["beats"] == (v["model"] < bar)
    assert v["line"].startswith("the tuned model beats" if v["beats"] else "the tuned model does NOT beat")
    # 4 val series x 18 windows = 72 val samples: fewer than 100
    assert best["warnings"] and "RNNTUNE_SMALL_VAL_SPLIT" in best["warnings"][0] and "folds" in best["warnings"][0]

    study = optuna.load_study(study_name=SPEC["name"], storage=settings.database_url)
    attrs = study.user_attrs  # what the dashboard shows
    assert attrs["rnntune_baselines"]["ridge_ar"]["loss"] == pytest.approx(stored["ridge_ar"]["test"]["loss"])
    assert attrs["rnntune_versus_baseline"] == v["line"]


def test_the_model_file_and_the_trials_csv_carry_the_baselines(finished, client):
    import io

    from rnntune.models import load_model

    r = client.get(f"/v1/studies/{SPEC['name']}/best/model")
    meta = load_model(io.BytesIO(r.content), device="cpu").meta
    assert meta["baselines"]["persistence"]["test"] == pytest.approx(finished["baselines"]["persistence"]["test"])
    assert meta["versus_baseline"]["line"] == finished["versus_baseline"]["line"]
    r = client.get(f"/v1/studies/{SPEC['name']}/trials.csv")
    import json

    header = json.loads(r.headers["x-rnntune-baselines"])
    assert header["metric"] == "test loss"
    assert header["persistence"] == pytest.approx(finished["baselines"]["persistence"]["test"]["loss"])
    assert r.headers["x-rnntune-versus-baseline"] == finished["versus_baseline"]["line"]


def test_rnntune_status_shows_the_baselines_and_the_verdict(finished, settings):

    with serving(create_app(settings, dashboard=False)) as url:
        r = subprocess.run(
            [sys.executable, "-m", "rnntune.service.cli", "status", SPEC["name"], "--api-url", url],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "baselines on the same split" in r.stdout and "ridge_ar" in r.stdout
    assert finished["versus_baseline"]["line"] in r.stdout
    assert "warning: the val split holds" in r.stdout


# --- ties ----------------------------------------------------------------------------------------


def test_tied_trials_rank_by_val_loss_then_size(pg_url):
    """Accuracy 1.0 on a small val split is reached by several trials: the first of them is no
    better than the others; the one with the lower val loss is."""
    study = optuna.create_study(study_name="ties", storage=pg_url, direction="maximize")
    dist = {"hidden_size": optuna.distributions.IntDistribution(4, 64)}
    for hidden, value, val_loss, n_params in [
        (8, 0.9, 0.2, 100),
        (16, 1.0, 0.09, 900),
        (32, 1.0, 0.05, 3000),
        (64, 1.0, 0.05, 2000),
    ]:
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params={"hidden_size": hidden}, distributions=dist,
                user_attrs={"val_loss": val_loss, "n_params": n_params},
            )
        )  # fmt: skip
    from rnntune.service.store import optuna_compat

    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with Session(engine) as session:
        sid = optuna_compat.study_id(study)
        best = results.best_trial(session, sid, "maximize")
        ranked = [t.number for t in results.top_trials(session, sid, "maximize", 2)]
    # trials 2 and 3 tie on accuracy and val loss: the smaller (trial 3) wins; trial 1's higher loss ranks after
    assert best is not None and best.number == 3 and ranked == [3, 2]
    assert best.value is not None and math.isclose(best.value, 1.0)
    engine.dispose()


# --- small val splits --------------------------------------------------------------------------


def test_a_small_val_split_is_a_warning_at_submit_recommending_folds(client):
    small = {**SPEC, "name": "base-small", "priority": -1}
    r = client.post("/v1/studies", json=small)
    assert r.status_code == 201
    (warning,) = r.json()["warnings"]
    assert "72 samples" in warning and "RNNTUNE_SMALL_VAL_SPLIT" in warning and "selection" in warning
    digits = {
        "name": "base-digits", "data": {"name": "digits"}, "metric": "val_accuracy", "direction": "maximize",
        "search_space": {"hidden_size": {"type": "int", "low": 4, "high": 16}}, "budget": {"n_trials": 1},
        "priority": -1,
    }  # fmt: skip
    r = client.post("/v1/studies", json=digits)
    assert r.status_code == 201 and r.json()["warnings"] == []  # 270 val digits
    for name in ("base-small", "base-digits"):
        assert client.post(f"/v1/studies/{name}/cancel").status_code == 200
