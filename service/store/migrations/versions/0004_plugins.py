"""plugins and command trials: rnntune_studies.requires, rnntune_workers.capabilities

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rnntune_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requires", sa.JSON(), nullable=True))
    with op.batch_alter_table("rnntune_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("capabilities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rnntune_workers", schema=None) as batch_op:
        batch_op.drop_column("capabilities")
    with op.batch_alter_table("rnntune_studies", schema=None) as batch_op:
        batch_op.drop_column("requires")
