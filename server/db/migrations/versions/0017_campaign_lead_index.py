"""Columns derived from each campaign lead (domain, offline verdict, variable tokens) so launch
checks count in SQL; existing leads get them at their campaign's next preflight.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("domain", sa.Text()),
    ("verdict", sa.String(16)),
    ("verdict_detail", sa.Text()),
    ("var_index", sa.Text()),
)


def upgrade() -> None:
    """Add the nullable derived columns."""
    with op.batch_alter_table("campaign_leads") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("campaign_leads") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
