"""Row leases: a worker claims a batch of a bulk job's rows for a while, so several workers
work one job's rows at once and a killed worker's rows are taken again once their lease ends.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``job_items.lease_owner`` and ``job_items.lease_expires``."""
    with op.batch_alter_table("job_items") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop the row lease columns."""
    with op.batch_alter_table("job_items") as batch:
        batch.drop_column("lease_expires")
        batch.drop_column("lease_owner")
