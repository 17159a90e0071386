"""A real worker process whose training always raises: the failure-budget test runs it as a
subprocess (same settings from the environment as `rnntune worker`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnntune.service.cli import _logging
from rnntune.service.config import Settings
from rnntune.service.objective import Objective
from rnntune.service.worker import Worker


class RaisingObjective(Objective):
    def _train(self, trial, hp):
        raise RuntimeError(f"injected training failure (lr={hp['lr']:.3g})")


if __name__ == "__main__":
    _logging()
    worker = Worker(Settings(), threads=1, objective_factory=RaisingObjective)
    worker.install_signal_handlers()
    sys.exit(worker.run())
