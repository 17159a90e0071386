"""rnntune_tickets.trial_id (the ticket's Optuna trial) and rnntune_studies.deadline_at
(started_at + timeout_s, in database time): the ticket lifecycle of issue 13

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rnntune_tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trial_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("rnntune_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(), nullable=True))
    # A study already running with a timeout keeps it.
    studies = sa.table(
        "rnntune_studies",
        sa.column("id", sa.Integer),
        sa.column("started_at", sa.DateTime),
        sa.column("timeout_s", sa.Float),
        sa.column("deadline_at", sa.DateTime),
    )
    bind = op.get_bind()
    timed = sa.select(studies.c.id, studies.c.started_at, studies.c.timeout_s).where(
        studies.c.started_at.is_not(None), studies.c.timeout_s.is_not(None)
    )
    for study_id, started_at, timeout_s in bind.execute(timed).all():
        deadline = started_at + timedelta(seconds=timeout_s)
        bind.execute(studies.update().where(studies.c.id == study_id).values(deadline_at=deadline))


def downgrade() -> None:
    with op.batch_alter_table("rnntune_studies", schema=None) as batch_op:
        batch_op.drop_column("deadline_at")
    with op.batch_alter_table("rnntune_tickets", schema=None) as batch_op:
        batch_op.drop_column("trial_id")
