"""Response shapes (``*Public``) of the HTTP API. Requests are ``service.spec.StudySpec``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class TrialCounts(BaseModel):
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int


class StudySummary(BaseModel):
    name: str
    state: str = Field(description="queued, running, done, cancelled or failed")
    reason: str | None = Field(description="why a study ended early (failed, cancelled, timeout)")
    direction: str
    metric: str
    data: str
    n_trials: int = Field(description="finished trials (complete + pruned) the budget asks for")
    finished: int
    counts: TrialCounts
    best_value: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class StudyList(BaseModel):
    items: list[StudySummary]


class TrialPublic(BaseModel):
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    epochs: int = Field(description="epochs trained (intermediate values reported)")
    duration_s: float | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    user_attrs: dict[str, Any]


class EpochPoint(BaseModel):
    epoch: int
    value: float | None


class BestTrial(TrialPublic):
    curve: list[EpochPoint] = Field(description="the metric after every epoch")


class StudyPublic(StudySummary):
    spec: dict[str, Any]
    best_trial: BestTrial | None


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
