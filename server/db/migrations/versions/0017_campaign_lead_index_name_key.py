"""Columns derived from each campaign lead (domain, offline verdict, variable tokens) so launch
checks count in SQL; existing leads get them at their campaign's next preflight. And the
campaigns' case-folded name (``name_key``, Unicode casefold, filled here for existing rows) that
the list search matches on, the same on SQLite and PostgreSQL.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

Plain ADD/DROP COLUMN, not batch mode: on SQLite a batch copy drops and recreates the table,
and with foreign keys on that cascades into its children (a campaign's leads, their sends).
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
    """Add the nullable derived columns; fill ``campaigns.name_key``."""
    for name, type_ in _COLUMNS:
        op.add_column("campaign_leads", sa.Column(name, type_, nullable=True))
    op.add_column("campaigns", sa.Column("name_key", sa.Text(), nullable=True))
    campaigns = sa.table("campaigns", sa.column("id"), sa.column("name"), sa.column("name_key"))
    conn = op.get_bind()
    for campaign_id, name in conn.execute(sa.select(campaigns.c.id, campaigns.c.name)).all():
        conn.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(name_key=str(name).casefold())
        )


def downgrade() -> None:
    """Drop them."""
    op.drop_column("campaigns", "name_key")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("campaign_leads", name)
