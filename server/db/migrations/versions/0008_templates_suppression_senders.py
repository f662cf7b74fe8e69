"""Data resources: email templates, the suppression list, sender profiles and their named prompts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``templates``, ``suppressions``, ``sender_profiles`` and ``sender_prompts``."""
    op.create_table(
        "templates",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_templates_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
    )
    op.create_index("ix_templates_user_id_id", "templates", ["user_id", "id"])
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_suppressions_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_suppressions"),
        sa.UniqueConstraint("user_id", "value", name="uq_suppressions_user_value"),
        sa.CheckConstraint("kind IN ('email', 'domain')", name="ck_suppressions_kind"),
    )
    op.create_index("ix_suppressions_user_id_id", "suppressions", ["user_id", "id"])
    op.create_table(
        "sender_profiles",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("sender_data", sa.JSON(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_sender_profiles_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sender_profiles"),
    )
    op.create_index("ix_sender_profiles_user_id_id", "sender_profiles", ["user_id", "id"])
    op.create_table(
        "sender_prompts",
        sa.Column("profile_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["sender_profiles.id"],
            name="fk_sender_prompts_profile_id_sender_profiles",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("profile_id", "name", name="pk_sender_prompts"),
    )


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("sender_prompts")
    op.drop_index("ix_sender_profiles_user_id_id", table_name="sender_profiles")
    op.drop_table("sender_profiles")
    op.drop_index("ix_suppressions_user_id_id", table_name="suppressions")
    op.drop_table("suppressions")
    op.drop_index("ix_templates_user_id_id", table_name="templates")
    op.drop_table("templates")
