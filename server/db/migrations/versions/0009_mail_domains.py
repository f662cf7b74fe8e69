"""Mail domains and aliases: sending domains with their DKIM keys and DNS checks, and the
addresses (display name, reply-to, forwarding) on them.

Revision ID: 0009
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``mail_domains`` and ``mail_aliases``."""
    op.create_table(
        "mail_domains",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("dkim_keys", sa.JSON(), nullable=False),
        sa.Column("tracking", sa.Boolean(), nullable=False),
        sa.Column("inbound", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("checks", sa.JSON()),
        sa.Column("checked_at", sa.Float()),
        sa.Column("verified_at", sa.Float()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "status IN ('not_started', 'pending', 'verified')", name="ck_mail_domains_status"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_mail_domains_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_mail_domains"),
        sa.UniqueConstraint("user_id", "name", name="uq_mail_domains_user_id_name"),
    )
    op.create_table(
        "mail_aliases",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("domain_id", sa.Text(), nullable=False),
        sa.Column("local_part", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text()),
        sa.Column("reply_to", sa.Text()),
        sa.Column("forwarding", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_mail_aliases_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["mail_domains.id"],
            name="fk_mail_aliases_domain_id_mail_domains",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_mail_aliases"),
        sa.UniqueConstraint("domain_id", "local_part", name="uq_mail_aliases_domain_id_local_part"),
    )
    op.create_index("ix_mail_aliases_domain_id", "mail_aliases", ["domain_id"])
    op.create_index("ix_mail_aliases_user_id_id", "mail_aliases", ["user_id", "id"])


def downgrade() -> None:
    """Drop ``mail_aliases`` and ``mail_domains``."""
    op.drop_table("mail_aliases")
    op.drop_table("mail_domains")
