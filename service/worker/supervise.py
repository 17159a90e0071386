"""Supervision: a worker started by ``serve`` / ``worker --per-gpu`` never outlives its starter."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from typing import Protocol

log = logging.getLogger("rnntune.worker")
SUPERVISOR_ENV = "RNNTUNE_SUPERVISOR_PID"  # set by the supervisor for the workers it starts
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Stoppable(Protocol):
    """What the watch needs of a worker: its id, its stop, and whether it is stopping."""

    id: str
    stopping: threading.Event

    def stop(self) -> None: ...


def parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``prctl``
    PR_SET_PDEATHSIG, through ctypes). False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_supervisor(worker: Stoppable, supervisor_pid: int, period_s: float = 1.0) -> None:
    """Stop ``worker`` gracefully (as SIGTERM would) when the process that started it dies,
    even by SIGKILL: the parent-death signal on Linux, and everywhere a thread that notices
    the parent pid change (the process is re-parented) within ``period_s``."""
    parent_death_signal(signal.SIGTERM)

    def orphaned() -> bool:
        return os.getppid() != supervisor_pid

    def stop() -> None:
        log.warning("worker %s: its supervisor (pid %d) is gone; stopping", worker.id, supervisor_pid)
        worker.stop()

    if orphaned():  # it died before the signal was armed
        stop()
        return

    def watch() -> None:
        while not worker.stopping.wait(period_s):
            if orphaned():
                stop()
                return

    threading.Thread(target=watch, name="rnntune-supervisor-watch", daemon=True).start()
