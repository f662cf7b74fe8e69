"""Jobs: one row per background job (find, verify, bulk find, dataset verification, leads) and
one row per input item of a bulk job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JOB_STATES = "'queued', 'running', 'cancel_requested', 'succeeded', 'failed', 'cancelled'"
ITEM_STATES = "'pending', 'running', 'done', 'failed', 'skipped'"


def upgrade() -> None:
    """Create ``jobs`` and ``job_items`` (same DDL on SQLite and PostgreSQL)."""
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("hooked_at", sa.Float(), nullable=True),
        sa.CheckConstraint(f"state IN ({JOB_STATES})", name="ck_jobs_state"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_owner_id_id", "jobs", ["owner_id", "id"])
    op.create_index("ix_jobs_state_lease_expires", "jobs", ["state", "lease_expires"])
    op.create_index("ix_jobs_hooked_at_state", "jobs", ["hooked_at", "state"])
    op.create_table(
        "job_items",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint(f"state IN ({ITEM_STATES})", name="ck_job_items_state"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], ondelete="CASCADE", name="fk_job_items_job_id_jobs"
        ),
        sa.PrimaryKeyConstraint("job_id", "idx", name="pk_job_items"),
    )
    op.create_index("ix_job_items_job_id_state", "job_items", ["job_id", "state"])


def downgrade() -> None:
    """Drop the job tables."""
    op.drop_table("job_items")
    op.drop_table("jobs")
