"""rnntune_tickets.params / retry_of / deaths: a ticket carries the parameters its next trial
runs (an initial trial, or a retry after an interruption or a lost worker) and how many times
a worker was lost on them. The lease is the one judge of a lost worker (docs/architecture.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rnntune_tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("deaths", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rnntune_tickets", schema=None) as batch_op:
        batch_op.drop_column("deaths")
        batch_op.drop_column("retry_of")
        batch_op.drop_column("params")
