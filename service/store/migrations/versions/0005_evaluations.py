"""rnntune_evaluations: the re-evaluation runs of a study's best trials (``selection``, issue 16)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rnntune_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("seed_index", sa.Integer(), nullable=False),
        sa.Column("fold", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["rnntune_studies.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ticket_id"], ["rnntune_tickets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id"),
    )
    with op.batch_alter_table("rnntune_evaluations", schema=None) as batch_op:
        batch_op.create_index("ix_rnntune_evaluations_study", ["study_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rnntune_evaluations", schema=None) as batch_op:
        batch_op.drop_index("ix_rnntune_evaluations_study")
    op.drop_table("rnntune_evaluations")
