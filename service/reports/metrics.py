"""Prometheus metrics, computed at scrape time from the database (``GET /metrics``).

Every API replica reports the same numbers: they come from Optuna's tables and ours, read with a
few grouped queries per scrape (never trial by trial), not from counters kept in one process.

- ``rnntune_trials{study,state}``: trials per Optuna state (zeros included for our studies).
- ``rnntune_studies{state}``: studies per rnntune state.
- ``rnntune_queue_depth{study}``: tickets (trial, reeval and finalize) a worker carrying the study's labels
  could claim now (service/queue/depth.py: the same statement as the KEDA trigger's query).
- ``rnntune_workers_live``: workers not stopped whose heartbeat is under 30 s old.
- ``rnntune_trial_duration_seconds{study}``: histogram of finished (COMPLETE / PRUNED) trials'
  ``datetime_complete - datetime_start`` (includes sampling, data loading, model build).
- ``rnntune_epoch_duration_seconds{study}``: histogram of epochs: each finished trial adds one
  observation per epoch it reported, of its training time / epochs. Training time is the
  objective's ``train_seconds`` user attribute (the ``fit`` loop alone), or the trial's duration
  when that attribute is missing. Optuna keeps no per-epoch timestamps, so this is each trial's
  mean epoch, not every epoch's own time.
- ``rnntune_epochs_saved_by_pruning_total{study}``: over PRUNED trials, the study's
  ``budget.max_epochs`` minus the epochs the trial reported (its intermediate values).
- ``rnntune_database_up``: 0 when the queries above failed (the scrape still answers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from sqlalchemy import Float, Row, and_, case, cast, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rnntune.service.queue.depth import claimable_by_study
from rnntune.service.reports.results import NOT_WARM, TRIAL_STATES, _state
from rnntune.service.spec import try_stored_spec
from rnntune.service.store.attrs import TrialAttr
from rnntune.service.store.optuna_compat import StudyModel, inter_t, trials_t, uattrs_t
from rnntune.service.store.tables import STUDY_STATES, StudyRow, WorkerRow, WorkerState, utcnow

log = logging.getLogger("rnntune.metrics")

WORKER_LIVE_S = 30.0  # 3 x the 10 s worker heartbeat the docs promise (workers beat every <= 5 s)
TRIAL_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
EPOCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
FINISHED = ("COMPLETE", "PRUNED")


def _seconds_between(session: Session, start, end):
    """``end - start`` in seconds as a float SQL expression, on PostgreSQL and SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", end - start), Float)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


class RnntuneCollector(Collector):
    """A prometheus_client collector over one sessionmaker; every ``collect`` runs the queries."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def describe(self) -> list[Metric]:
        return []  # computed per scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        try:
            with self.sessions() as session:
                families = list(self._families(session))
        except SQLAlchemyError as exc:
            log.warning("metrics: database query failed: %s", type(exc).__name__)
            families = []
        up = GaugeMetricFamily("rnntune_database_up", "1 when the metrics queries succeeded")
        up.add_metric([], 1.0 if families else 0.0)
        yield from families
        yield up

    def _families(self, session: Session) -> Iterator[Metric]:
        studies = session.execute(
            select(
                StudyRow.id, StudyRow.name, StudyRow.optuna_study_id, StudyRow.state, StudyRow.spec, StudyRow.spec_hash
            )
        ).all()
        # Label by study name, Optuna's (the same as ours), so foreign Optuna studies show too.
        names = dict(session.execute(select(StudyModel.study_id, StudyModel.study_name)).all())

        # Trials per study and state: one grouped query.
        counts = {(study.optuna_study_id, s): 0 for study in studies for s in TRIAL_STATES}
        for sid, state, n in session.execute(
            select(trials_t.c.study_id, trials_t.c.state, func.count())
            .where(NOT_WARM)
            .group_by(trials_t.c.study_id, trials_t.c.state)
        ):
            counts[(sid, _state(state))] = n
        trials = GaugeMetricFamily("rnntune_trials", "trials by study and Optuna state", labels=["study", "state"])
        for (sid, state), n in sorted(counts.items(), key=lambda kv: (names.get(kv[0][0], ""), kv[0][1])):
            trials.add_metric([names.get(sid, str(sid)), state], n)
        yield trials

        by_state = dict.fromkeys(STUDY_STATES, 0)
        for study in studies:
            by_state[study.state] = by_state.get(study.state, 0) + 1
        study_states = GaugeMetricFamily("rnntune_studies", "rnntune studies by state", labels=["state"])
        for state, n in by_state.items():
            study_states.add_metric([state], n)
        yield study_states

        claimable = claimable_by_study(session)
        depth = GaugeMetricFamily(
            "rnntune_queue_depth", "tickets per study that workers with its labels could claim now", labels=["study"]
        )
        for study in sorted(studies, key=lambda r: r.name):
            depth.add_metric([study.name], claimable.get(study.id, 0))
        yield depth

        recent = utcnow() - timedelta(seconds=WORKER_LIVE_S)
        live = session.execute(
            select(func.count())
            .select_from(WorkerRow)
            .where(WorkerRow.state != WorkerState.STOPPED, WorkerRow.last_heartbeat >= recent)
        ).scalar_one()
        workers = GaugeMetricFamily(
            "rnntune_workers_live", f"workers not stopped with a heartbeat in the last {WORKER_LIVE_S:g} s"
        )
        workers.add_metric([], live)
        yield workers

        specs = {study.optuna_study_id: try_stored_spec(study) for study in studies}  # None: broken, not counted
        max_epochs = {sid: spec.budget.max_epochs for sid, spec in specs.items() if spec is not None}
        yield from self._durations(session, names, max_epochs)

    def _durations(self, session: Session, names: dict[int, str], max_epochs: dict[int, int]) -> Iterator[Metric]:
        """Trial and epoch histograms and pruning savings, from :func:`_finished_trials`."""
        rows = _finished_trials(session)
        trial_h = HistogramMetricFamily(
            "rnntune_trial_duration_seconds", "finished trials' wall time, start to complete", labels=["study"]
        )
        epoch_h = HistogramMetricFamily(
            "rnntune_epoch_duration_seconds",
            "epochs of finished trials: training seconds / epochs reported, one observation per epoch",
            labels=["study"],
        )
        saved = CounterMetricFamily(
            "rnntune_epochs_saved_by_pruning",
            "epochs not trained because a trial was pruned (budget.max_epochs - epochs reported)",
            labels=["study"],
        )
        k = len(TRIAL_BUCKETS)
        for row in sorted(rows, key=lambda r: names.get(r[0], "")):
            sid, n, dur_sum, epochs, train_sum, n_pruned, pruned_epochs = row[:7]
            name = names.get(sid, str(sid))
            trial_counts = [int(c or 0) for c in row[7 : 7 + k]]
            epoch_counts = [int(c or 0) for c in row[7 + k :]]
            trial_h.add_metric(
                [name],
                [*((_le(b), c) for b, c in zip(TRIAL_BUCKETS, trial_counts, strict=False)), ("+Inf", int(n))],
                float(dur_sum),
            )
            epoch_h.add_metric(
                [name],
                [*((_le(b), c) for b, c in zip(EPOCH_BUCKETS, epoch_counts, strict=False)), ("+Inf", int(epochs))],
                float(train_sum),
            )
            if sid in max_epochs:  # a study of ours, not a foreign Optuna study
                saved.add_metric([name], max(0, int(n_pruned) * max_epochs[sid] - int(pruned_epochs)))
        yield trial_h
        yield epoch_h
        yield saved


def _finished_trials(session: Session) -> Sequence[Row]:
    """Per study: (study id, trials, their summed duration, epochs, training seconds, pruned
    trials, their epochs, then the cumulative count of each trial bucket and each epoch bucket),
    one grouped query over finished trials."""
    epochs_q = select(inter_t.c.trial_id, func.count().label("n")).group_by(inter_t.c.trial_id).subquery("epochs")
    train_q = (
        select(uattrs_t.c.trial_id, cast(uattrs_t.c.value_json, Float).label("s"))
        .where(uattrs_t.c.key == TrialAttr.TRAIN_SECONDS)
        .subquery("train")
    )
    duration = _seconds_between(session, trials_t.c.datetime_start, trials_t.c.datetime_complete)
    n_epochs = func.coalesce(epochs_q.c.n, 0)
    train_s = func.coalesce(train_q.c.s, duration)
    per_epoch = train_s / func.nullif(n_epochs, 0)
    pruned = trials_t.c.state == "PRUNED"
    columns = [
        trials_t.c.study_id,
        func.count(),
        func.coalesce(func.sum(duration), 0.0),
        func.coalesce(func.sum(n_epochs), 0),
        func.coalesce(func.sum(case((n_epochs > 0, train_s), else_=0.0)), 0.0),
        func.coalesce(func.sum(case((pruned, 1), else_=0)), 0),
        func.coalesce(func.sum(case((pruned, n_epochs), else_=0)), 0),
        *[func.sum(case((duration <= b, 1), else_=0)) for b in TRIAL_BUCKETS],
        *[func.sum(case((per_epoch <= b, n_epochs), else_=0)) for b in EPOCH_BUCKETS],
    ]
    return session.execute(
        select(*columns)
        .select_from(
            trials_t.outerjoin(epochs_q, epochs_q.c.trial_id == trials_t.c.trial_id).outerjoin(
                train_q, train_q.c.trial_id == trials_t.c.trial_id
            )
        )
        .where(
            trials_t.c.state.in_(FINISHED),
            and_(trials_t.c.datetime_start.is_not(None), trials_t.c.datetime_complete.is_not(None)),
        )
        .group_by(trials_t.c.study_id)
    ).all()


def _le(bound: float) -> str:
    return floatToGoString(bound)


def registry_for(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding only our collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RnntuneCollector(sessions))
    return registry
