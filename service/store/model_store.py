"""The stored models of a study (``rnntune_models``): write a version, pick the current one, read
them (the API publishes them as ``ModelPublic`` / ``ModelVersion``).

A study stores one version per round: its submitted budget is round 0 (version 1), each
extension (``service/studies/ops.py``) a further round whose finalize stores the next version. The
``is_current`` version, the one ``GET …/best`` and ``…/best/model`` serve, is the best by
``metric`` (the study's direction; ties keep the older), so an extension replaces the model only
when its best is better, and the previous version stays listed.

Torch-free: the API reads and serves model files through this module, while the compute step that
makes them (train, test, save) lives in :mod:`rnntune.service.trials.finalize`, which only workers import.
"""

from __future__ import annotations

import math

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from rnntune.service.store.tables import ModelRow, StudyRow

PROCEDURE = "best trial re-created: same config and seed, train split, up to its best epoch"


def store(session: Session, row: ModelRow, direction: str) -> bool:
    """Insert the study's model of its current round as a new version (a retried finalize of
    the same round replaces that round's version, keeping its number), then mark the best
    version current. Returns whether ``row`` is the current one. Commits.

    The study row is locked first (the lock order everywhere), so two finalize attempts of a
    round (a worker judged lost that still finishes) serialise and leave one version."""
    study = session.scalar(select(StudyRow).where(StudyRow.id == row.study_id).with_for_update())
    if study is None:  # deleted while it was being finalized: nothing to store it under
        session.rollback()
        return False
    row.round = study.round
    same_round = session.scalar(
        select(ModelRow.version).where(ModelRow.study_id == row.study_id, ModelRow.round == study.round)
    )
    if same_round is not None:
        session.execute(delete(ModelRow).where(ModelRow.study_id == row.study_id, ModelRow.round == study.round))
        row.version = same_round
    else:
        last = session.scalar(select(func.max(ModelRow.version)).where(ModelRow.study_id == row.study_id))
        row.version = (last or 0) + 1
    row.is_current = False
    session.add(row)
    session.flush()
    best = _best_version(session, row.study_id, direction)
    session.execute(
        update(ModelRow).where(ModelRow.study_id == row.study_id).values(is_current=ModelRow.version == best)
    )
    session.commit()
    return best == row.version


def _best_version(session: Session, study_id: int, direction: str) -> int:
    """The version with the best metric (a missing or non-finite metric ranks last; ties: the
    older version, so an equal model never replaces the one users have)."""
    sign = 1.0 if direction == "minimize" else -1.0
    rows = session.execute(select(ModelRow.version, ModelRow.metric).where(ModelRow.study_id == study_id)).all()

    def key(r) -> tuple[float, int]:
        finite = r.metric is not None and math.isfinite(r.metric)
        return (sign * r.metric if finite else math.inf, r.version)

    return min(rows, key=key).version


def get_model(session: Session, study_id: int) -> ModelRow | None:
    """The current model's row, without its bytes."""
    return session.scalar(select(ModelRow).where(ModelRow.study_id == study_id, ModelRow.is_current.is_(True)))


def model_content(session: Session, study_id: int) -> bytes | None:
    """The current model's file."""
    return session.scalar(select(ModelRow.content).where(ModelRow.study_id == study_id, ModelRow.is_current.is_(True)))


def versions(session: Session, study_id: int) -> list[ModelRow]:
    """Every stored version of the study's model, oldest first (without their bytes)."""
    return list(session.scalars(select(ModelRow).where(ModelRow.study_id == study_id).order_by(ModelRow.version)))
