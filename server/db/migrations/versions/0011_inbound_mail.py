"""Inbound mail: received messages, conversations and their Message-ID references, bounces.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE"
    )


def upgrade() -> None:
    """Create ``inbound_emails``, ``mail_conversations``, ``mail_thread_refs``, ``mail_bounces``."""
    op.create_table(
        "inbound_emails",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("in_reply_to", sa.JSON(), nullable=False),
        sa.Column("reference_ids", sa.JSON(), nullable=False),
        sa.Column("mail_from", sa.Text(), nullable=False),
        sa.Column("rcpt_to", sa.JSON(), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=True),
        sa.Column("from_name", sa.Text(), nullable=True),
        sa.Column("to_addresses", sa.JSON(), nullable=False),
        sa.Column("cc_addresses", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=True),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("auto_reply", sa.String(length=20), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("raw_key", sa.Text(), nullable=False),
        sa.Column("sent_date", sa.Float(), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.CheckConstraint("kind IN ('message', 'dsn')", name="ck_inbound_emails_kind"),
        _user_fk("inbound_emails"),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_emails"),
    )
    op.create_index("ix_inbound_emails_user_id_id", "inbound_emails", ["user_id", "id"])
    op.create_index("ix_inbound_emails_conversation_id", "inbound_emails", ["conversation_id"])
    op.create_table(
        "mail_conversations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("inbound_count", sa.Integer(), nullable=False),
        sa.Column("last_message_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        _user_fk("mail_conversations"),
        sa.PrimaryKeyConstraint("id", name="pk_mail_conversations"),
    )
    op.create_index("ix_mail_conversations_user_id_id", "mail_conversations", ["user_id", "id"])
    op.create_table(
        "mail_thread_refs",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("ref_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.CheckConstraint("source IN ('inbound', 'outbound')", name="ck_mail_thread_refs_source"),
        _user_fk("mail_thread_refs"),
        sa.PrimaryKeyConstraint("user_id", "message_id", name="pk_mail_thread_refs"),
    )
    op.create_index("ix_mail_thread_refs_conversation_id", "mail_thread_refs", ["conversation_id"])
    op.create_table(
        "mail_bounces",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("inbound_email_id", sa.String(length=40), nullable=True),
        sa.Column("sent_message_id", sa.String(length=40), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('hard', 'soft', 'policy', 'none')", name="ck_mail_bounces_kind"
        ),
        _user_fk("mail_bounces"),
        sa.PrimaryKeyConstraint("id", name="pk_mail_bounces"),
    )
    op.create_index("ix_mail_bounces_user_id_recipient", "mail_bounces", ["user_id", "recipient"])
    op.create_index("ix_mail_bounces_sent_message_id", "mail_bounces", ["sent_message_id"])


def downgrade() -> None:
    """Drop the inbound mail tables."""
    for table in ("mail_bounces", "mail_thread_refs", "mail_conversations", "inbound_emails"):
        op.drop_table(table)
