"""rnntune_workers.trial_number: the Optuna trial a worker runs, for GET /v1/workers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 18:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rnntune_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rnntune_workers", schema=None) as batch_op:
        batch_op.drop_column("trial_number")
