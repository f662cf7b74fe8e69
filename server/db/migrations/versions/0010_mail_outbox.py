"""The BaviMail outbox: one row per outgoing message (signed bytes, envelope, state, lease).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

MAIL_STATES = "'queued', 'sending', 'sent', 'failed', 'cancelled'"


def upgrade() -> None:
    """Create ``mail_messages`` (same DDL on SQLite and PostgreSQL)."""
    op.create_table(
        "mail_messages",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("envelope_from", sa.Text(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("headers_view", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("tags_key", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("scheduled_at", sa.Float(), nullable=True),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("handed_off_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires", sa.Float(), nullable=True),
        sa.Column("attempt_token", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("relay_queue_id", sa.Text(), nullable=True),
        sa.Column("relay_reply", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("suppressed", sa.JSON(), nullable=True),
        sa.CheckConstraint(f"state IN ({MAIL_STATES})", name="ck_mail_messages_state"),
        sa.PrimaryKeyConstraint("id", name="pk_mail_messages"),
        sa.UniqueConstraint("message_id", name="uq_mail_messages_message_id"),
    )
    op.create_index("ix_mail_messages_user_id_id", "mail_messages", ["user_id", "id"])
    op.create_index(
        "ix_mail_messages_state_next_attempt_at", "mail_messages", ["state", "next_attempt_at"]
    )
    op.create_index("ix_mail_messages_domain_created_at", "mail_messages", ["domain", "created_at"])
    op.create_index(
        "ix_mail_messages_from_address_created_at",
        "mail_messages",
        ["from_address", "created_at"],
    )


def downgrade() -> None:
    """Drop the outbox."""
    op.drop_table("mail_messages")
