"""Verdicts: the last SMTP verification per address, for the free cached answer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``verdicts``."""
    op.create_table(
        "verdicts",
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("verified_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("email", name="pk_verdicts"),
    )
    op.create_index("ix_verdicts_verified_at", "verdicts", ["verified_at"])


def downgrade() -> None:
    """Drop ``verdicts``."""
    op.drop_table("verdicts")
