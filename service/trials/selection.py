"""Re-evaluated winners: the spec's ``selection: {top_k, seeds, folds}``.

Picking the single best validation score of a search is partly luck: the best of many trials
is, on average, one whose score was flattered by its seed or its val split. With a selection,
when the search budget is spent the queue (``queue._add_reevals``) makes the ``top_k`` best
complete trials *candidates* and queues one ``reeval`` ticket per further run of each: every
training seed index ``0 .. seeds-1`` on every rolling-origin fold ``0 .. folds-1`` of the train
+ val data (``rnntune.models.data.splits.rolling_origin_folds``; forecasting data only), except
(seed 0, last fold), which is the search trial itself. Any worker runs them (:func:`reevaluate`),
with the lease, renewal, expired-lease sweep and retry cap of trials; each run's value (the
study's metric at its best epoch, as the objective measures it) lands in ``rnntune_evaluations``
in the settle that spends its ticket. The winner is the candidate with the best mean over its
complete runs (ties: the better search value); the finalize step then trains and tests the
winner exactly as it would the single best trial (its own seed, the search's split, up to its
best epoch: the test split is touched once, by the winner only).

This module is torch-free for the API (:func:`summary`, :func:`progress`); :func:`reevaluate`
imports the training code when a worker calls it.
"""

from __future__ import annotations

import math
import statistics
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rnntune.service.reports import results
from rnntune.service.spec import StudySpec
from rnntune.service.store.tables import EvaluationRow, EvaluationState, StudyRow
from rnntune.service.trials.outcome import Interrupted
from rnntune.service.trials.recipe import Recipe, TrialRecord, metric_value

if TYPE_CHECKING:  # worker side only
    from rnntune.service.data.data_cache import DataCache

SEED_STRIDE = 1_000_003  # a prime: run seeds of one study never meet another study's seed + small offsets


def run_seed(seed: int, seed_index: int) -> int:
    """The training seed of a candidate's run ``seed_index``: the study's own (``spec.seed``,
    the one every search trial trained with) for 0, a distinct one for each other index."""
    return seed + SEED_STRIDE * seed_index


def rule(spec: StudySpec) -> str:
    best = "lowest" if spec.direction == "minimize" else "highest"
    sel = spec.selection
    return (
        f"best mean validation {spec.metric} ({best}) over each candidate's complete runs "
        f"({sel.seeds} seeds x {sel.folds} folds, the search trial included); ties: the better search value"
    )


def _candidate(trial_number: int, rows: list[EvaluationRow]) -> dict[str, Any]:
    values = [
        r.value for r in rows if r.state == EvaluationState.COMPLETE and r.value is not None and math.isfinite(r.value)
    ]
    return {
        "trial": trial_number,
        "trial_id": rows[0].trial_id,
        "rank": rows[0].rank,
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
        "failed": sum(r.state == EvaluationState.FAILED for r in rows),
        "pending": sum(r.state == EvaluationState.PENDING for r in rows),
        "runs": [
            {"seed_index": r.seed_index, "fold": r.fold, "state": r.state, "value": r.value, "error": r.error}
            for r in rows
        ],
    }


def summary(session: Session, study_id: int, optuna_study_id: int, spec: StudySpec) -> dict[str, Any] | None:
    """The selection of a study as the API, the CLI and the model file show it: each candidate's
    values, mean, sd (sample; null for one value) and n, by search rank; the winner once no run
    is pending. None for the default selection (the single best trial)."""
    sel = spec.selection
    if sel.is_default:
        return None
    rows = list(
        session.scalars(
            select(EvaluationRow)
            .where(EvaluationRow.study_id == study_id, EvaluationRow.round == _round(session, study_id))
            .order_by(EvaluationRow.rank, EvaluationRow.seed_index, EvaluationRow.fold)
        )
    )
    by_trial: dict[int, list[EvaluationRow]] = {}
    for row in rows:
        by_trial.setdefault(row.trial_number, []).append(row)
    candidates = [_candidate(number, trial_rows) for number, trial_rows in by_trial.items()]
    params = {t.number: t.params for t in results.trials_by_number(session, optuna_study_id, list(by_trial))}
    for c in candidates:
        c["params"] = params.get(c["trial"], {})
    runs = [r for r in rows if r.ticket_id is not None]
    done = sum(r.state != EvaluationState.PENDING for r in runs)
    total = len(runs) if rows else sel.top_k * (sel.seeds * sel.folds - 1)
    winner = pick_winner(candidates, spec.directions()[0]) if rows and done == len(runs) else None
    return {
        "top_k": sel.top_k,
        "seeds": sel.seeds,
        "folds": sel.folds,
        "rule": rule(spec),
        "done": done,
        "total": total,
        "candidates": candidates,
        "winner": winner,
        "search_best": candidates[0]["trial"] if candidates else None,
    }


def _round(session: Session, study_id: int):
    """The study's current round, as a subquery: an extended study's selection is its last round's."""
    return select(StudyRow.round).where(StudyRow.id == study_id).scalar_subquery()


def pick_winner(candidates: list[dict[str, Any]], direction: str) -> int | None:
    """The trial number of the candidate with the best mean (ties: the better search rank)."""
    sign = 1.0 if direction == "minimize" else -1.0
    scored = [c for c in candidates if c["mean"] is not None]
    if not scored:
        return None
    return min(scored, key=lambda c: (sign * c["mean"], c["rank"]))["trial"]


def progress(session: Session, study_id: int, spec: StudySpec) -> dict[str, int] | None:
    """``{done, total}`` re-evaluation runs (the planned total before they are queued); None for
    the default selection."""
    sel = spec.selection
    if sel.is_default:
        return None
    n_rows, total, done = session.execute(
        select(
            func.count(),
            func.count(EvaluationRow.ticket_id),
            func.count(EvaluationRow.ticket_id).filter(EvaluationRow.state != EvaluationState.PENDING),
        ).where(EvaluationRow.study_id == study_id, EvaluationRow.round == _round(session, study_id))
    ).one()
    if not n_rows:
        return {"done": 0, "total": sel.top_k * (sel.seeds * sel.folds - 1)}
    return {"done": int(done), "total": int(total)}


def reevaluate(
    spec: StudySpec,
    trial: TrialRecord,
    *,
    seed_index: int,
    fold: int,
    device: str,
    data_cache: DataCache,
    stop: threading.Event,
) -> tuple[float, int]:
    """Train a candidate again (``recipe.Recipe``, as the objective trained it) with the
    training seed of ``seed_index``, on fold ``fold`` of ``selection.folds`` (one fold: the search's own split),
    with the objective's epochs and early stopping and no pruning. Reads no test data (a fold
    has none; the search's split keeps it out of ``fit``). Returns (the study's metric at the
    best epoch, that epoch). Raises ``Interrupted`` when ``stop`` is set, ``DivergedError`` on a
    non-finite metric, ``StudyDataError`` when the fold cannot be cut."""
    from rnntune.models.train import DivergedError, EpochResult

    folds = spec.selection.folds
    recipe = Recipe.of_trial(
        spec,
        trial,
        data_cache,
        device=device,
        fold=(fold, folds) if folds > 1 else None,
        seed=run_seed(spec.seed, seed_index),
    )

    def on_epoch_end(result: EpochResult) -> bool:
        if stop.is_set():
            raise Interrupted(f"re-evaluation stopped at epoch {result.epoch}")
        return False

    result = recipe.fit(on_epoch_end, should_stop=stop.is_set)
    value = metric_value(spec, result.history[result.best_epoch - 1])
    if not math.isfinite(value):
        raise DivergedError(f"{spec.metric} is {value} at its best epoch {result.best_epoch}")
    return value, result.best_epoch
