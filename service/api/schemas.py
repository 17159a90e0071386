"""Response shapes (``*Public``) of the HTTP API. Requests are ``rnntune.service.spec.StudySpec``.

Every route handler returns one of these (its return annotation is its response model): built
once in the handler, FastAPI serialises it without validating it again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# Every stored time is naive UTC (Optuna's convention, and the database's now() in UTC): published
# with its offset, so it is the RFC 3339 date-time the OpenAPI schema promises.
UTCDateTime = Annotated[datetime, AfterValidator(_utc)]


class Health(BaseModel):
    status: str = Field(description="ok")


class Readiness(BaseModel):
    status: str = Field(description="ready")
    migration: str = Field(description="the database's migration revision, the code's head")


class TrialCounts(BaseModel):
    complete: int
    pruned: int
    failed: int = Field(description="trials that failed: an error, a diverged metric, a worker lost too often")
    interrupted: int = Field(
        description="trials stopped by a pause, a shutdown, a cancel or a lost worker (their parameters run again); "
        "Optuna stores them as FAIL"
    )
    running: int
    waiting: int


class StudySummary(BaseModel):
    name: str
    owner: str | None = Field(
        description="the name of the token that created it; null: a token without a name, or an open API"
    )
    state: str = Field(
        description="queued, running, finalizing (re-evaluating the best trials or storing the best model), paused, "
        "done, cancelled or failed"
    )
    reason: str | None = Field(description="why a study ended early (failed, cancelled, timeout)")
    direction: str
    metric: str
    data: str
    n_trials: int = Field(description="finished trials (complete + pruned) the budget asks for")
    finished: int
    counts: TrialCounts
    best_value: float | None
    created_at: UTCDateTime
    started_at: UTCDateTime | None
    finished_at: UTCDateTime | None


class StudyList(BaseModel):
    items: list[StudySummary]


class TrialPublic(BaseModel):
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    epochs: int = Field(description="epochs trained (intermediate values reported)")
    duration_s: float | None
    datetime_start: UTCDateTime | None
    datetime_complete: UTCDateTime | None
    user_attrs: dict[str, Any]


class EpochPoint(BaseModel):
    epoch: int
    value: float | None


class BestTrial(TrialPublic):
    curve: list[EpochPoint] = Field(description="the metric after every epoch")


class ReevaluationProgress(BaseModel):
    done: int = Field(description="re-evaluation runs ended (complete or failed)")
    total: int = Field(description="re-evaluation runs queued (before the search ends: planned)")


class StudyPublic(StudySummary):
    spec: dict[str, Any]
    best_trial: BestTrial | None
    reevaluations: ReevaluationProgress | None = Field(
        default=None, description="spec.selection: the best trials' runs with more seeds and folds; null without one"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="on submit: what makes the result less trustworthy (a val split under RNNTUNE_SMALL_VAL_SPLIT)",
    )


class TrialsPage(BaseModel):
    items: list[TrialPublic]
    next_after: int | None = Field(description="pass as ?after= for the next page; null at the end")


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class ValidationProblem(BaseModel):
    detail: list[ErrorItem]


class Problem(BaseModel):
    detail: str


# --- data sets (routes/datasets.py) -------------------------------------------------------------


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # a DatasetRow maps field for field

    id: int
    name: str = Field(description="what a spec's data.dataset names (or the id)")
    filename: str
    format: str = Field(description="csv or npz: the spec's data.name")
    sha256: str = Field(description="of the stored bytes")
    size: int = Field(description="bytes")
    info: dict[str, Any] = Field(
        description="csv: rows, columns, numeric_columns, other_columns; npz: X, y shapes, task"
    )
    owner: str | None = Field(description="the name of the token that uploaded it (null: none)")
    created_at: UTCDateTime


class DatasetList(BaseModel):
    items: list[DatasetPublic]


# --- workers (routes/workers.py) ----------------------------------------------------------------


class PluginPublic(BaseModel):
    group: str = Field(description="rnntune.models, rnntune.datasets or rnntune.objectives")
    name: str = Field(description="the entry-point name a spec uses (model.plugin, data.plugin, objective.plugin)")
    distribution: str | None
    version: str | None


class PluginAvailable(PluginPublic):
    workers: int = Field(description="live workers that have it")


class PluginList(BaseModel):
    items: list[PluginAvailable]
    command_workers: int = Field(description="live workers that run command trials (--allow-commands)")
    workers: int = Field(description="live workers")


class WorkerPublic(BaseModel):
    id: str = Field(description="host-pid-random, as in the worker's log lines")
    host: str
    pid: int
    device: str = Field(description="cpu, cuda or cuda:N")
    labels: list[str] = Field(description="it claims only studies whose labels it has (none: any)")
    plugins: list[PluginPublic] = Field(default=[], description="the plugins installed where it runs")
    commands: bool = Field(default=False, description="whether its operator allowed command trials")
    state: str = Field(
        description="idle, busy, stopped (deregistered), or lost: no heartbeat for a lease period "
        "(killed or cut off; its ticket has been or will be requeued)"
    )
    study: str | None = Field(description="the study of the ticket it runs (busy or lost)")
    ticket_id: int | None
    trial_number: int | None = Field(description="the Optuna trial it runs, once the ticket has one")
    started_at: UTCDateTime
    last_heartbeat: UTCDateTime
    heartbeat_age_s: float


class WorkerList(BaseModel):
    items: list[WorkerPublic]


# --- results (routes/results.py) ----------------------------------------------------------------


class ModelPublic(BaseModel):
    trial_number: int
    procedure: str = Field(description="how the stored weights were produced")
    config: dict[str, Any] = Field(description="models.ModelConfig and TrainConfig as stored in the file")
    device: str
    seconds: float = Field(description="time to re-train, test and store")
    sha256: str
    size: int
    created_at: UTCDateTime
    download: str = Field(description="GET this path for the model file (rnntune.load_model reads it)")


class ModelVersion(BaseModel):
    """One stored model of a study: its first budget's, then one per extension."""

    version: int = Field(description="1, 2, ...: in the order the versions were stored")
    trial_number: int
    metric: float | None = Field(
        description="what versions are compared on: the trial's value, or with a selection the winner's mean"
    )
    current: bool = Field(description="the version GET …/best and …/best/model serve (the best metric)")
    sha256: str
    size: int
    created_at: UTCDateTime


class ModelVersionList(BaseModel):
    study: str
    metric: str
    direction: str
    items: list[ModelVersion] = Field(description="oldest first; empty until the first model is stored")


class ExtendRequest(BaseModel):
    """POST /v1/studies/{name}/extend."""

    model_config = ConfigDict(extra="forbid")
    n_trials: int = Field(ge=1, le=2**31 - 1, description="more trial tickets to run")


class SelectionRun(BaseModel):
    seed_index: int = Field(description="0: the study's training seed (the search trial's own)")
    fold: int = Field(description="rolling-origin fold; the last is the search's own split")
    state: str = Field(description="pending, complete or failed")
    value: float | None
    error: str | None


class SelectionCandidate(BaseModel):
    trial: int = Field(description="the trial number")
    rank: int = Field(description="its place in the search (0: the search's best)")
    params: dict[str, Any]
    mean: float | None = Field(description="of its complete runs' values")
    sd: float | None = Field(description="sample standard deviation; null for fewer than two values")
    n: int = Field(description="complete runs, the search trial included")
    values: list[float]
    failed: int = Field(description="runs that failed (after max_retries attempts, or diverged)")
    pending: int = Field(description="runs still to end")
    runs: list[SelectionRun]


class SelectionPublic(BaseModel):
    top_k: int
    seeds: int
    folds: int
    rule: str = Field(description="how the winner is chosen")
    done: int = Field(description="re-evaluation runs ended")
    total: int = Field(description="re-evaluation runs in all")
    candidates: list[SelectionCandidate] = Field(description="by search rank; empty until the search ends")
    winner: int | None = Field(description="the trial with the best mean, once every run has ended")
    search_best: int | None = Field(description="the trial with the best single search value")


class BestPublic(BaseModel):
    study: str
    state: str
    metric: str
    direction: str
    trial_number: int
    value: float | None = Field(description="the best trial's objective value (several objectives: the first's)")
    objectives: dict[str, float] | None = Field(
        default=None, description="several objectives: the best trial's value of each (GET .../pareto: the front)"
    )
    params: dict[str, Any] = Field(description="the searched parameters of the best trial")
    hyperparameters: dict[str, Any] = Field(description="every hyperparameter, searched, fixed or default")
    val_metrics: dict[str, Any] | None = Field(description="on the val split (of the stored model once there is one)")
    test_metrics: dict[str, Any] | None = Field(
        description="on the test split, measured once; null until the model is stored"
    )
    model: ModelPublic | None = Field(description="null until the study's budget is spent and the model is stored")
    baselines: dict[str, Any] | None = Field(
        default=None,
        description="simple models fitted and scored on the trials' own split (val and test metrics, or why "
        "skipped); null until the model is stored (docs/baselines.md)",
    )
    versus_baseline: dict[str, Any] | None = Field(
        default=None,
        description="whether the stored model beats the best baseline on the study metric's test counterpart, "
        "by how much, and that as one line",
    )
    warnings: list[str] = Field(default_factory=list, description="how far the result can be trusted (small splits)")
    selection: SelectionPublic | None = Field(
        default=None,
        description="spec.selection: the re-evaluated candidates (mean, sd, n) and the winner, whose model is stored; "
        "null without one",
    )


class ObjectivePublic(BaseModel):
    name: str = Field(description="a val metric, n_params or latency_ms")
    direction: str


class ParetoTrial(BaseModel):
    number: int
    values: dict[str, float | None] = Field(description="objective -> the trial's value")
    params: dict[str, Any] = Field(description="the searched parameters")
    epochs: int = Field(description="epochs trained")


class ParetoPublic(BaseModel):
    study: str
    state: str
    objectives: list[ObjectivePublic] = Field(description="in the spec's order; the first is the one pruned on")
    n_complete: int = Field(description="complete trials compared")
    trials: list[ParetoTrial] = Field(
        description="the complete trials no other complete trial matches or beats on every objective and beats "
        "on one, by number (one objective: the best trials); `rnntune export NAME --trial N` retrains any of them"
    )


class ParamImportance(BaseModel):
    name: str
    importance: float
    n_trials: int = Field(description="complete trials in which the parameter was suggested")
    when: dict[str, list] | None = Field(description="a conditional parameter's condition")


class ImportancesPublic(BaseModel):
    study: str
    evaluator: str
    n_trials: int = Field(description="complete trials assessed")
    target_quantile: float | None
    importances: dict[str, float] = Field(
        description="parameter -> share (sums to 1); empty when there are too few trials"
    )
    params: list[ParamImportance]
    reason: str | None = Field(description="why importances is empty")
    notes: list[str]
