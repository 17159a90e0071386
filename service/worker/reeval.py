"""A re-evaluation ticket's handler: train a candidate again with one seed on one fold
(``service/trials/selection.py``), and say how the run ended."""

from __future__ import annotations

import logging
import time
from typing import Any

from rnntune.models.train import DivergedError, TrainingStopped
from rnntune.service import logs, queue
from rnntune.service.data.data_cache import StudyDataError
from rnntune.service.spec import StudySpec
from rnntune.service.store.db import TRANSIENT_ERRORS
from rnntune.service.trials import selection
from rnntune.service.trials.outcome import Interrupted, Interruption
from rnntune.service.trials.recipe import TrialRecord
from rnntune.service.worker.base import WorkerBase
from rnntune.service.worker.results import Lost, Reevaluated

log = logging.getLogger("rnntune.worker")


def run_reeval(worker: WorkerBase, claim: queue.Claim) -> Reevaluated | Lost:
    """The run's value, or its error. Errors go back to the queue up to ``max_retries`` (deaths
    count too: the expired-lease sweep adds them); a diverged run or data that cannot be cut
    into the fold fails the run at once (it would fail the same way again)."""
    spec = worker._spec(claim)
    run = worker._with_session(lambda s: _plain(queue.evaluation(s, claim.ticket_id)))
    if run is None:  # cannot happen: the ticket and its evaluation are written together
        return Reevaluated(error="re-evaluation: no evaluation row for this ticket", final=True)
    worker.lease.show(None, run["trial_number"])  # the heartbeat shows the candidate
    logs.bind(trial=run["trial_number"])
    limit = worker.settings.max_retries
    if run["failures"] > limit:
        reason = f"re-evaluation gave up after {run['failures']} failures (max_retries={limit}); last: {run['error']}"
        log.warning("worker %s: %s", worker.id, reason)
        return Reevaluated(error=reason, final=True)
    log.info(
        "worker %s: re-evaluating trial %d of %s (seed %d, fold %d; attempt %d)",
        worker.id, run["trial_number"], claim.study_name, run["seed_index"], run["fold"], claim.attempts,
    )  # fmt: skip
    return _reevaluate(worker, spec, run)


def _reevaluate(worker: WorkerBase, spec: StudySpec, run: dict[str, Any]) -> Reevaluated | Lost:
    """Train the run's candidate; every way out is one result."""
    started = time.monotonic()
    try:
        trial = worker._db(worker.storage.get_trial, run["trial_id"])
        value, best_epoch = selection.reevaluate(
            spec,
            TrialRecord.of(trial),
            seed_index=run["seed_index"],
            fold=run["fold"],
            device=worker.device,
            data_cache=worker.data_cache,
            stop=worker.lease.interrupt,
        )
    except (Interrupted, TrainingStopped):
        why = worker.lease.interruption()
        if why == Interruption.LOST:  # the ticket is another worker's now
            return Lost()
        return Reevaluated(error=f"interrupted: {why}", counts=False)
    except TRANSIENT_ERRORS as exc:
        log.warning("worker %s: storage failed around a re-evaluation (%s)", worker.id, type(exc).__name__)
        return Reevaluated(error=f"storage: {type(exc).__name__}", counts=False)
    except (StudyDataError, DivergedError) as exc:
        log.warning("worker %s: re-evaluation of trial %d failed: %s", worker.id, run["trial_number"], exc)
        return Reevaluated(error=f"{type(exc).__name__}: {exc}", final=True)
    except Exception as exc:
        log.exception("worker %s: re-evaluation of trial %d failed", worker.id, run["trial_number"])
        return Reevaluated(
            error=f"{type(exc).__name__}: {exc}", final=run["failures"] + 1 > worker.settings.max_retries
        )
    # (settle counts it only while this worker still holds the ticket: one that another
    # worker took after our lease ran out is theirs to count)
    note = (
        f"trial {run['trial_number']} re-evaluated (seed {run['seed_index']}, fold {run['fold']}): "
        f"{spec.metric}={value:.6g}"
    )
    return Reevaluated(value=value, best_epoch=best_epoch, seconds=round(time.monotonic() - started, 3), note=note)


def _plain(row: Any) -> dict[str, Any] | None:
    """An ORM row's columns, read while its session is open."""
    if row is None:
        return None
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}
