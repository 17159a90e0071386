"""A real worker process with faults injected at the steps of the ticket lifecycle: the lifecycle
tests run it as a subprocess (same settings from the environment as ``rnntune worker``).

``RNNTUNE_FAULTS`` (read once, at start) lists faults, comma-separated, each ``STEP:WHEN:ACTION``
with an optional ``@N`` (the N-th time the step is reached; default the first):

- STEP: ``claim`` (``queue.claim``), ``start`` (the trial is recorded on its ticket), ``report``
  (each epoch's ``trial.report``), ``tell`` (Optuna's final state write), ``settle`` (the
  ticket's settle, or on older code the complete / release / drop it replaced), ``finalize``,
  ``reeval`` (a re-evaluation run of a candidate, ``selection.reevaluate``).
- WHEN: ``before`` the step's database write, or ``after`` it committed.
- ACTION: ``exit`` (``os._exit``: the process dies on the spot), ``raise`` (the storage's
  transient error, as if the connection dropped: after a commit, its acknowledgement is lost),
  or ``fail`` (a plain ``RuntimeError``: an error that is not the storage's).

``RNNTUNE_FAULT_TRAINING=raise`` makes every training run raise instead (the failure-budget test).
The faults wrap the seams from outside; rnntune's own code has no test hooks.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna

from rnntune.service import queue
from rnntune.service.cli import _logging
from rnntune.service.config import Settings
from rnntune.service.store import db
from rnntune.service.trials import finalize, objective, selection
from rnntune.service.trials.objective import Objective
from rnntune.service.worker import Worker

STEPS = ("claim", "start", "report", "tell", "settle", "finalize", "reeval")
EXIT_CODE = 17  # a fault's os._exit: tests tell it from a crash


class RaisingObjective(Objective):
    def _train(self, trial, hp):
        raise RuntimeError(f"injected training failure (lr={hp['lr']:.3g})")


def parse(text: str) -> dict[tuple[str, str], tuple[str, int]]:
    """``"tell:after:exit,report:before:raise@2"`` -> {(step, when): (action, n)}."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        spec, _, n = item.partition("@")
        step, when, action = spec.split(":")
        if step not in STEPS or when not in ("before", "after") or action not in ("exit", "raise", "fail"):
            raise SystemExit(f"RNNTUNE_FAULTS: bad fault {item!r}")
        out[(step, when)] = (action, int(n or 1))
    return out


class Faults:
    def __init__(self, faults: dict[tuple[str, str], tuple[str, int]]):
        self.faults = faults
        self.hits: dict[tuple[str, str], int] = {}

    def hit(self, step: str, when: str) -> None:
        if (step, when) not in self.faults:
            return
        self.hits[(step, when)] = n = self.hits.get((step, when), 0) + 1
        action, at = self.faults[(step, when)]
        if n != at:
            return
        print(f"fault_worker: {step}:{when}:{action} (hit {n})", file=sys.stderr, flush=True)
        if action == "exit":
            os._exit(EXIT_CODE)
        if action == "raise":
            raise optuna.exceptions.StorageInternalError(f"injected: {step} {when}")
        raise RuntimeError(f"injected: {step} {when}")

    def wrap(self, owner, name: str, step: str, when=lambda *a, **k: True) -> None:
        real = getattr(owner, name)

        @functools.wraps(real)
        def wrapped(*args, **kwargs):
            active = when(*args, **kwargs)
            if active:
                self.hit(step, "before")
            out = real(*args, **kwargs)
            if active:
                self.hit(step, "after")
            return out

        setattr(owner, name, wrapped)


def install(faults: Faults) -> None:
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL}
    faults.wrap(queue, "claim", "claim")
    if hasattr(queue, "start_trial"):
        faults.wrap(queue, "start_trial", "start")
    else:  # older code: the trial starts when it draws its parameters
        faults.wrap(objective, "suggest", "start")
    faults.wrap(optuna.trial.Trial, "report", "report")
    faults.wrap(db.ResilientRDBStorage, "set_trial_state_values", "tell", lambda *a, **k: _state(a, k) in finished)
    for name in ("settle", "complete", "release", "drop"):
        if hasattr(queue, name):
            faults.wrap(queue, name, "settle")
    faults.wrap(finalize, "finalize_study", "finalize")
    faults.wrap(selection, "reevaluate", "reeval")


def _state(args, kwargs):
    """The ``state`` of a ``set_trial_state_values(self, trial_id, state, values)`` call."""
    return kwargs.get("state", args[2] if len(args) > 2 else None)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--exit-when-idle", action="store_true")
    ap.add_argument("--max-trials", type=int)
    args = ap.parse_args()
    _logging()
    install(Faults(parse(os.environ.get("RNNTUNE_FAULTS", ""))))
    factory = RaisingObjective if os.environ.get("RNNTUNE_FAULT_TRAINING") == "raise" else Objective
    worker = Worker(
        Settings(), threads=1, objective_factory=factory, exit_when_idle=args.exit_when_idle, max_trials=args.max_trials
    )
    worker.install_signal_handlers()
    sys.exit(worker.run())
