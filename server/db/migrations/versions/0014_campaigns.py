"""Campaigns: the campaign, its steps, its leads, per-lead drafts awaiting approval, the
exactly-once send record of each lead's step, and lead events (replies, unsubscribes, stops).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the campaign tables."""
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("holds", sa.JSON(), nullable=False),
        sa.Column("dataset_id", sa.Text(), nullable=True),
        sa.Column("email_column", sa.Text(), nullable=True),
        sa.Column("sender_alias_ids", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("daily_cap", sa.Integer(), nullable=True),
        sa.Column("alias_daily_cap", sa.Integer(), nullable=True),
        sa.Column("requires_approval", sa.Boolean(), nullable=False),
        sa.Column("stop_on_reply", sa.Boolean(), nullable=False),
        sa.Column("track_opens", sa.Boolean(), nullable=False),
        sa.Column("track_clicks", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("launched_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "status IN ('draft', 'active', 'paused', 'completed', 'cancelled')",
            name="ck_campaigns_status",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_campaigns_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status"], unique=False)
    op.create_index("ix_campaigns_user_id_id", "campaigns", ["user_id", "id"], unique=False)
    op.create_table(
        "campaign_leads",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("stop_reason", sa.String(length=24), nullable=True),
        sa.Column("next_position", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=True),
        sa.Column("alias_id", sa.Text(), nullable=True),
        sa.Column("thread_message_id", sa.Text(), nullable=True),
        sa.Column("last_sent_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'waiting_approval', 'stopped', 'completed', 'failed')",
            name="ck_campaign_leads_status",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_leads_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_leads"),
        sa.UniqueConstraint("campaign_id", "email", name="uq_campaign_leads_campaign_id_email"),
    )
    op.create_index(
        "ix_campaign_leads_campaign_id_id", "campaign_leads", ["campaign_id", "id"], unique=False
    )
    op.create_index(
        "ix_campaign_leads_status_due_at", "campaign_leads", ["status", "due_at"], unique=False
    )
    op.create_index(
        "ix_campaign_leads_thread_message_id", "campaign_leads", ["thread_message_id"], unique=False
    )
    op.create_table(
        "campaign_steps",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("delay_seconds", sa.Integer(), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_steps_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_steps"),
        sa.UniqueConstraint(
            "campaign_id", "position", name="uq_campaign_steps_campaign_id_position"
        ),
    )
    op.create_table(
        "campaign_drafts",
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("variant", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("approved_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint("state IN ('draft', 'approved')", name="ck_campaign_drafts_state"),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["campaign_leads.id"],
            name="fk_campaign_drafts_lead_id_campaign_leads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("lead_id", "position", name="pk_campaign_drafts"),
    )
    op.create_index(
        "ix_campaign_drafts_campaign_id", "campaign_drafts", ["campaign_id"], unique=False
    )
    op.create_table(
        "campaign_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("email_id", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["campaign_leads.id"],
            name="fk_campaign_events_lead_id_campaign_leads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_events"),
        sa.UniqueConstraint(
            "lead_id", "kind", "email_id", name="uq_campaign_events_lead_kind_email"
        ),
    )
    op.create_index(
        "ix_campaign_events_campaign_id_kind",
        "campaign_events",
        ["campaign_id", "kind"],
        unique=False,
    )
    op.create_index(
        "ix_campaign_events_lead_id_at", "campaign_events", ["lead_id", "at"], unique=False
    )
    op.create_table(
        "campaign_sends",
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("variant", sa.String(length=16), nullable=False),
        sa.Column("alias_id", sa.Text(), nullable=True),
        sa.Column("email_id", sa.String(length=40), nullable=True),
        sa.Column("queued_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["campaign_leads.id"],
            name="fk_campaign_sends_lead_id_campaign_leads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("lead_id", "position", name="pk_campaign_sends"),
    )
    op.create_index(
        "ix_campaign_sends_alias_id_queued_at",
        "campaign_sends",
        ["alias_id", "queued_at"],
        unique=False,
    )
    op.create_index(
        "ix_campaign_sends_campaign_id_queued_at",
        "campaign_sends",
        ["campaign_id", "queued_at"],
        unique=False,
    )
    op.create_index("ix_campaign_sends_email_id", "campaign_sends", ["email_id"], unique=False)


def downgrade() -> None:
    """Drop the campaign tables."""
    for table in (
        "campaign_sends",
        "campaign_events",
        "campaign_drafts",
        "campaign_steps",
        "campaign_leads",
        "campaigns",
    ):
        op.drop_table(table)
