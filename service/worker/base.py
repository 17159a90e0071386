"""What a ticket's handler uses of its worker: identity, settings and device, the database and
Optuna's storage with their retries, the caches kept for the worker's life (specs, Optuna
studies, data sets), and the :class:`~rnntune.service.worker.lease.Lease` of the held ticket."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from sqlalchemy.orm import Session

from rnntune.service import queue, routing
from rnntune.service.config import Settings
from rnntune.service.data.data_cache import DataCache
from rnntune.service.search import build_pruner, build_sampler
from rnntune.service.spec import StudySpec, load_stored
from rnntune.service.store.db import (
    RETRY_ATTEMPTS,
    in_session,
    make_engine,
    make_storage,
    patient_attempts,
    retry_db,
    session_factory,
)
from rnntune.service.trials.command import CommandOptions
from rnntune.service.trials.objective import Objective
from rnntune.service.worker.device import pick_device
from rnntune.service.worker.lease import Lease

log = logging.getLogger("rnntune.worker")
T = TypeVar("T")
CACHED_STUDIES = 32  # specs and Optuna studies a worker keeps; past that it starts afresh


class WorkerBase:
    def __init__(
        self,
        settings: Settings,
        *,
        labels: set[str] | None = None,
        device: str = "auto",
        threads: int | None = None,
        max_trials: int | None = None,
        exit_when_idle: bool = False,
        objective_factory: Callable[..., Objective] = Objective,
        command_dirs: list[str] | tuple[str, ...] = (),
    ):
        self.settings = settings
        self.labels = set(labels or ())
        self.device = pick_device(device)
        self.threads = threads or settings.torch_threads
        self.max_trials = max_trials
        self.exit_when_idle = exit_when_idle
        self.objective_factory = objective_factory  # benchmarks swap in a trivial objective
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()  # shutdown asked: finish at the next epoch boundary
        self.n_trials_run = 0
        self._backoff_s = 0.0  # the wait before the next claim after failures outside training
        self._next_housekeeping = 0.0

        self.engine = make_engine(settings)
        self.sessions = session_factory(self.engine)
        self.storage = make_storage(settings)
        self.lease = Lease(self.id, self.sessions, settings.lease_s, self.stopping)
        self._studies: dict[tuple, optuna.Study] = {}
        self._specs: dict[tuple, StudySpec] = {}  # by Claim.study_key
        self.data_cache = DataCache(
            sessions=self.sessions,
            cache_dir=settings.data_dir / "datasets",
            data_roots=settings.roots,
            file_limits=settings.file_limits,
            allow_root_text=settings.allow_root_text,
        )
        # Plugins installed here and command directories the operator allowed: the worker
        # registers them and claims only the studies they cover.
        self.commands = CommandOptions.from_settings(settings, command_dirs)
        self.capabilities = routing.capabilities(commands=bool(self.commands.dirs))

    def can_run(self, requires: dict) -> bool:
        """Whether this worker has what a study needs (its plugins; its script, in an allowed directory)."""
        if routing.missing(requires, self.capabilities):
            return False
        return not requires.get("command") or self.commands.can_run(requires["command"])

    # --- what the worker keeps of each study ---------------------------------------------
    def _spec(self, claim: queue.Claim) -> StudySpec:
        """A study's spec, validated once per worker (it was validated at submission; a study's
        spec never changes), not once per ticket."""
        if claim.study_key not in self._specs:
            if claim.spec is None:  # left out of the claim for a study this worker forgot meanwhile
                raise LookupError(f"study {claim.study_name}: the claim carries no spec")
            if len(self._specs) >= CACHED_STUDIES:
                self._specs.clear()
            self._specs[claim.study_key] = load_stored(claim.spec)
        return self._specs[claim.study_key]

    def _study(self, claim: queue.Claim, spec: StudySpec) -> optuna.Study:
        """One Study object per study for the worker's life: its storage cache then reads only
        the trials that changed since the last ticket, and its sampler keeps what it has
        learned of the search space (TPE's intersection search space is incremental).

        The sampler is seeded once, with the spec's seed plus the sequence number of the first
        ticket this worker runs for the study: a single worker's run is reproducible, and two
        workers never share a seed (no two run the same ticket first; a retried ticket's
        attempt count moves the offset)."""
        key = claim.study_key  # a deleted study's name may come back as another study
        if key not in self._studies:
            if len(self._studies) >= CACHED_STUDIES:
                self._studies.clear()
            self._studies[key] = optuna.load_study(
                study_name=claim.study_name,
                storage=self.storage,
                sampler=build_sampler(spec, seed_offset=claim.seq + 100_003 * (claim.attempts - 1)),
                pruner=build_pruner(spec),
            )
        return self._studies[key]

    def _forget_deleted(self) -> None:
        """Drop what this worker cached of studies deleted since (their spec, Optuna study and
        loaded data): a new study may take the name."""
        keys = set(self._specs) | set(self._studies)
        if not keys:
            return
        with self.sessions() as s:
            alive = {tuple(r) for r in s.execute(queue.study_keys([k[0] for k in keys])).all()}
        for key in keys - alive:
            spec = self._specs.pop(key, None)
            study = self._studies.pop(key, None)
            name = spec.name if spec is not None else study.study_name if study is not None else None
            if name is not None:
                self.data_cache.forget(name)
            log.info("worker %s: forgot deleted study %s", self.id, name)

    # --- the database, retried -----------------------------------------------------------
    def _db(self, fn: Callable[..., T], *args: Any, attempts: int = RETRY_ATTEMPTS) -> T:
        return retry_db(fn, *args, attempts=attempts, log=log, who=f"worker {self.id}")

    def _with_session(self, fn: Callable[[Session], T], attempts: int = RETRY_ATTEMPTS) -> T:
        return self._db(in_session, self.sessions, fn, attempts=attempts)

    def _patient(self) -> int:
        """The attempts of a write that must not be dropped: fewer once the worker is stopping."""
        return patient_attempts(self.stopping.is_set())
