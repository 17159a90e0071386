"""Rounds and model versions (issue 31): a study can be extended, so its tickets, evaluations and
models belong to a round (0: the submitted budget, + 1 per extension), and ``rnntune_models``
holds one version per round (id key, version, current, metric) instead of one row per study.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ROUND_TABLES = ("rnntune_studies", "rnntune_tickets", "rnntune_evaluations")
MODEL_COLUMNS = (
    "study_id, trial_number, params, hyperparameters, metrics, config, device, seconds, sha256, size, content, "
    "created_at"
)


def _model_columns() -> list[sa.Column]:
    return [
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    ]


def upgrade() -> None:
    for table in ROUND_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
    # a new table, rows copied: the primary key changes (study_id -> id), which SQLite cannot alter
    op.create_table(
        "rnntune_models_v2",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("metric", sa.Float(), nullable=True),
        *_model_columns(),
        sa.ForeignKeyConstraint(["study_id"], ["rnntune_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "version", name="uq_rnntune_models_study_version"),
        sa.UniqueConstraint("study_id", "round", name="uq_rnntune_models_study_round"),
    )
    op.execute(
        f"INSERT INTO rnntune_models_v2 (version, round, is_current, {MODEL_COLUMNS}) "
        f"SELECT 1, 0, {sa.true().compile(dialect=op.get_bind().dialect)}, {MODEL_COLUMNS} FROM rnntune_models"
    )
    op.drop_table("rnntune_models")
    op.rename_table("rnntune_models_v2", "rnntune_models")


def downgrade() -> None:
    op.create_table(
        "rnntune_models_v1",
        sa.Column("study_id", sa.Integer(), nullable=False),
        *_model_columns(),
        sa.ForeignKeyConstraint(["study_id"], ["rnntune_studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id"),
    )
    current = sa.true().compile(dialect=op.get_bind().dialect)
    op.execute(
        f"INSERT INTO rnntune_models_v1 ({MODEL_COLUMNS}) SELECT {MODEL_COLUMNS} FROM rnntune_models "
        f"WHERE is_current = {current}"
    )
    op.drop_table("rnntune_models")
    op.rename_table("rnntune_models_v1", "rnntune_models")
    for table in reversed(ROUND_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("round")
