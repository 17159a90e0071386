"""Report a trial's progress to rnntune from your own training code (torch- and optuna-free).

In a command trial (``objective: {command: [...]}``) the worker starts your script with a pipe
to talk through; one line per step is all a script needs::

    from rnntune import report, final
    for epoch in range(1, epochs + 1):
        ...
        report(epoch, val_loss)     # the pruner's decision comes back: raises TrialPruned to stop
    final(best_val_loss)            # optional: the trial's value (default: the last reported)

Run alone (no worker around), ``report`` and ``final`` do nothing and ``params()`` is ``{}``, so
the same script works both ways. From any other language, print one line per step instead::

    RNNTUNE_REPORT step=3 value=0.25
    RNNTUNE_FINAL value=0.21

The trial's parameters are in the JSON file named by ``RNNTUNE_PARAMS_FILE`` (``params()``
reads it) as well as on the command line where the spec put ``{name}``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, TextIO

PARAMS_ENV = "RNNTUNE_PARAMS_FILE"  # the trial's parameters, one JSON object
REPORT_FD_ENV = "RNNTUNE_REPORT_FD"  # the child writes one JSON line per report here ...
REPLY_FD_ENV = "RNNTUNE_REPLY_FD"  # ... and reads the worker's decision back: "continue" / "prune"
REPORT_PREFIX = "RNNTUNE_REPORT"  # stdout protocol, any language: RNNTUNE_REPORT step=3 value=0.25
FINAL_PREFIX = "RNNTUNE_FINAL"  # RNNTUNE_FINAL value=0.21


class TrialPruned(Exception):
    """The pruner stopped this trial: let it propagate (the worker records the trial as pruned)."""


class _Channel:
    def __init__(self) -> None:
        self.out: TextIO | None = None
        self.back: TextIO | None = None
        fd_out, fd_back = os.environ.get(REPORT_FD_ENV), os.environ.get(REPLY_FD_ENV)
        if fd_out and fd_back:
            self.out = os.fdopen(int(fd_out), "w", buffering=1, encoding="utf-8")
            self.back = os.fdopen(int(fd_back), "r", encoding="utf-8")

    def send(self, message: dict[str, Any], *, reply: bool) -> str | None:
        if self.out is None or self.back is None:  # set together: both or neither
            return None
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()
        return self.back.readline().strip() if reply else None


_channel: _Channel | None = None


def _get_channel() -> _Channel:
    global _channel
    if _channel is None:
        _channel = _Channel()
    return _channel


def _number(value: Any, what: str) -> float:
    number = float(value)  # numpy and torch scalars too
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, but got {number}")
    return number


def report(step: int, value: float) -> None:
    """Record ``value`` at ``step`` (an epoch: the pruning step); raises :class:`TrialPruned`
    when rnntune's pruner stops the trial. A no-op when the script runs alone."""
    if isinstance(step, bool) or int(step) != step or step < 0:
        raise ValueError(f"step must be an integer >= 0, but got {step!r}")
    answer = _get_channel().send({"step": int(step), "value": _number(value, "value")}, reply=True)
    if answer == "prune":
        raise TrialPruned(f"pruned at step {int(step)}")


def final(value: float) -> None:
    """The trial's value (without it: the last reported one). A no-op when the script runs alone."""
    _get_channel().send({"final": _number(value, "final value")}, reply=False)


def params() -> dict[str, Any]:
    """The trial's parameters (``{}`` when the script runs alone)."""
    path = os.environ.get(PARAMS_ENV)
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
        return loaded
