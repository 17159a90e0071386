"""The stored model of a finished study (``rnntune_models``): write it and read it (the API publishes it as ``ModelPublic``).

Torch-free: the API reads and serves model files through this module, while the compute step that
makes them (train, test, save) lives in :mod:`rnntune.service.finalize`, which only workers import.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rnntune.service.tables import ModelRow

PROCEDURE = "best trial re-created: same config and seed, train split, up to its best epoch"


def store(session: Session, row: ModelRow) -> None:
    """Insert or replace a study's model (a retried finalize overwrites). Commits."""
    session.execute(delete(ModelRow).where(ModelRow.study_id == row.study_id))
    session.add(row)
    session.commit()


def get_model(session: Session, study_id: int) -> ModelRow | None:
    """The stored model's row, without its bytes."""
    return session.get(ModelRow, study_id)


def model_content(session: Session, study_id: int) -> bytes | None:
    return session.scalar(select(ModelRow.content).where(ModelRow.study_id == study_id))
