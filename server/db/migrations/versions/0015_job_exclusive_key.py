"""Jobs: an optional exclusive key, held by at most one unfinished job (a dataset is verified by
one job at a time, whatever requests race).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ACTIVE = "state IN ('queued', 'running', 'cancel_requested')"


def upgrade() -> None:
    """Add ``jobs.exclusive_key`` and its partial unique index over unfinished jobs."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("exclusive_key", sa.String(length=200), nullable=True))
    op.create_index(
        "uq_jobs_exclusive_key_active",
        "jobs",
        ["exclusive_key"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("uq_jobs_exclusive_key_active", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("exclusive_key")
