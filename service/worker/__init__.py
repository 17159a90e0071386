"""The worker: claims tickets and runs them, one at a time (one worker per GPU, or per CPU core).

``loop`` (the ``Worker``: claim -> the ticket kind's handler -> settle -> back off), the handlers
``trial``, ``reeval`` and ``finalize`` (each returns one ``results.Result``), ``results`` (the
result types and the one settle), ``lease`` (the held ticket: heartbeat, lease renewal, why a
trial stops), ``base`` (what a handler uses of its worker), ``supervise`` (a worker never outlives
the process that started it), ``device``. Import from here.
"""

from rnntune.service.worker.device import pick_device
from rnntune.service.worker.loop import HOUSEKEEPING_S, MAX_BACKOFF_S, Worker
from rnntune.service.worker.supervise import PR_SET_PDEATHSIG, SUPERVISOR_ENV, parent_death_signal, watch_supervisor

__all__ = [
    "HOUSEKEEPING_S",
    "MAX_BACKOFF_S",
    "PR_SET_PDEATHSIG",
    "SUPERVISOR_ENV",
    "Worker",
    "parent_death_signal",
    "pick_device",
    "watch_supervisor",
]
