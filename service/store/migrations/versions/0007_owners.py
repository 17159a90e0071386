"""rnntune_studies.owner, rnntune_datasets.owner: the token name that created each (issue 28)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("rnntune_studies", "rnntune_datasets")


def upgrade() -> None:
    for table in TABLES:  # existing rows: no owner (only an admin changes them when owners apply)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("owner")
