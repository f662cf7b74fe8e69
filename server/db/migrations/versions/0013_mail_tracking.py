"""Open and click tracking: a sent message's tracked links and its open/click events.

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``mail_links`` and ``mail_events``."""
    op.create_table(
        "mail_links",
        sa.Column("email_id", sa.String(length=40), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["mail_messages.id"],
            name="fk_mail_links_email_id_mail_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("email_id", "idx", name="pk_mail_links"),
    )
    op.create_table(
        "mail_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("email_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("link_idx", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.CheckConstraint("kind IN ('open', 'click')", name="ck_mail_events_kind"),
        sa.ForeignKeyConstraint(
            ["email_id"],
            ["mail_messages.id"],
            name="fk_mail_events_email_id_mail_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_mail_events"),
    )
    op.create_index("ix_mail_events_email_id_at", "mail_events", ["email_id", "at"])


def downgrade() -> None:
    """Drop the tracking tables."""
    op.drop_table("mail_events")
    op.drop_table("mail_links")
