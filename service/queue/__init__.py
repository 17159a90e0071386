"""The trial queue: every write to our ticket and worker tables lives in this package.

A study's budget is ``n_trials`` tickets. A worker claims one ticket (one short statement:
``FOR UPDATE SKIP LOCKED`` picks it, the same ``UPDATE`` leases it, committed before training),
records the Optuna trial it starts on the ticket, renews the lease while it trains, and hands
the run's :class:`~rnntune.service.trials.outcome.TrialOutcome` to :func:`settle`, which applies the
whole end-of-ticket rule in one transaction. A ticket whose lease ran out goes back to the
queue unless its trial already finished; a failed trial hands its ticket back too, so a study
always ends with exactly ``n_trials`` finished trials (docs/architecture.md, "Ticket lifecycle").

Once the trial tickets are spent, a study with a ``selection`` gets one ``reeval`` ticket per
re-evaluation run of its best trials (:func:`settle_reeval` ends each), and then, or at once
without one, its ``finalize`` ticket (:func:`settle_finalize`).

Every time here (leases, heartbeats, timeouts, ``lost``) is the database's clock, never a
worker's: :func:`db_now`.

``common`` (the clock, groups of states, statements) <- ``claimable`` (what a worker can claim,
defined once) <- ``studies`` (the study state machine) <- ``lost`` (the judge of expired leases)
<- ``tickets`` (claim, start, renew, settle) <- ``helpers`` (re-evaluation and finalize
tickets); ``workers`` (the registry). Import from here; ``depth`` (the queue depth for the
metric and KEDA, from ``claimable``) is imported as ``rnntune.service.queue.depth``, so that
``python -m rnntune.service.queue.depth`` runs it.
"""

from rnntune.service.queue.common import (
    ACTIVE,
    FINALIZE,
    HELD,
    OPEN,
    REEVAL,
    WORKERS_KEPT_DAYS,
    Claim,
    LifecycleError,
    Settled,
    db_now,
)
from rnntune.service.queue.helpers import (
    evaluation,
    settle_finalize,
    settle_reeval,
)
from rnntune.service.queue.lost import (
    Verdict,
    judge,
    requeue_expired,
    requeue_expired_now,
)
from rnntune.service.queue.studies import (
    BadTransition,
    _add_reevals,
    add_study,
    cancel_study,
    finish_study,
    pause_study,
    resume_study,
    study_keys,
)
from rnntune.service.queue.tickets import (
    claim,
    finalizing,
    holds,
    renew,
    settle,
    start_trial,
)
from rnntune.service.queue.workers import (
    deregister_worker,
    list_workers,
    live_capabilities,
    register_worker,
    unrunnable_reason,
    worker_heartbeat,
)

__all__ = [
    "ACTIVE",
    "BadTransition",
    "Claim",
    "FINALIZE",
    "HELD",
    "LifecycleError",
    "OPEN",
    "REEVAL",
    "Settled",
    "Verdict",
    "WORKERS_KEPT_DAYS",
    "_add_reevals",
    "add_study",
    "cancel_study",
    "claim",
    "db_now",
    "deregister_worker",
    "evaluation",
    "finalizing",
    "finish_study",
    "holds",
    "judge",
    "list_workers",
    "live_capabilities",
    "pause_study",
    "register_worker",
    "renew",
    "requeue_expired",
    "requeue_expired_now",
    "resume_study",
    "settle",
    "settle_finalize",
    "settle_reeval",
    "study_keys",
    "start_trial",
    "unrunnable_reason",
    "worker_heartbeat",
]
