"""A finalize ticket's handler: retrain the best configuration, evaluate it once on the test
split, store the model (``service/trials/finalize.py``), and say how that ended."""

from __future__ import annotations

import logging

from rnntune.service import queue
from rnntune.service.data.data_cache import StudyDataError
from rnntune.service.trials import finalize
from rnntune.service.worker.base import WorkerBase
from rnntune.service.worker.results import Finalized
from rnntune.service.worker.trial import retire_unrun_retries

log = logging.getLogger("rnntune.worker")


def run_finalize(worker: WorkerBase, claim: queue.Claim) -> Finalized:
    """Done, or an error: one past ``max_retries`` (or the data's own) is final."""
    spec = worker._spec(claim)
    log.info("worker %s: finalizing study %s (attempt %d)", worker.id, claim.study_name, claim.attempts)
    lost = claim.attempts - 1  # an error past max_retries ends the ticket: earlier holders died
    if lost > worker.settings.max_retries:
        # A finalize that kills its worker (out of memory, say) would otherwise be claimed and
        # kill the next one forever: the study ends done without a model, and says why.
        message = f"finalize: worker lost {lost} times; last: lease expired"
        log.error("worker %s: %s on study %s, not retried", worker.id, message, claim.study_name)
        return Finalized(error=message, final=True)
    try:
        study = worker._study(claim, spec)
        retire_unrun_retries(worker, claim)  # (the worker that spent the last ticket may have died)
        finalize.finalize_study(
            spec=spec,
            study=study,
            study_id=claim.study_id,
            sessions=worker.sessions,
            device=worker.device,
            data_cache=worker.data_cache,
            stop=worker.lease.interrupt,
        )
    except Exception as exc:  # the storage's transient errors too: the next attempt runs it again
        log.exception("worker %s: finalizing %s failed", worker.id, claim.study_name)
        final = claim.attempts > worker.settings.max_retries or isinstance(exc, StudyDataError)
        return Finalized(error=f"finalize failed: {type(exc).__name__}: {exc}", final=final)
    return Finalized()
