"""An index on the relay's queue id of sent messages: a bounce that names neither its VERP
return path nor a Message-ID of ours links back by it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``ix_mail_messages_relay_queue_id``."""
    op.create_index("ix_mail_messages_relay_queue_id", "mail_messages", ["relay_queue_id"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_mail_messages_relay_queue_id", table_name="mail_messages")
