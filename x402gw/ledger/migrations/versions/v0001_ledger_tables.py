"""Payment ledger table with live-unique authorization and payment-identifier indexes.

Revision ID: 0001_ledger_tables
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_ledger_tables"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_LIVE = "state <> 'released'"
_LIVE_PID = "payment_identifier IS NOT NULL AND state <> 'released'"


def upgrade() -> None:
    op.create_table(
        "x402gw_payments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("scheme", sa.String(200), nullable=False),
        sa.Column("network", sa.String(200), nullable=False),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("payer", sa.String(200), nullable=False),
        sa.Column("pay_to", sa.String(200), nullable=False),
        sa.Column("amount", sa.String(78), nullable=False),
        sa.Column("nonce", sa.String(66), nullable=False),
        sa.Column("valid_before", sa.BigInteger, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("payment_identifier", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("response_headers", sa.JSON, nullable=True),
        sa.Column("response_body", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('verified', 'settling', 'settled', 'failed', 'released')",
            name="ck_x402gw_payments_state",
        ),
    )
    op.create_index(
        "uq_x402gw_payments_live_authorization",
        "x402gw_payments",
        ["network", "asset", "payer", "nonce"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )
    op.create_index(
        "uq_x402gw_payments_live_payment_identifier",
        "x402gw_payments",
        ["payment_identifier"],
        unique=True,
        sqlite_where=sa.text(_LIVE_PID),
        postgresql_where=sa.text(_LIVE_PID),
    )
    op.create_index("ix_x402gw_payments_state", "x402gw_payments", ["state"])


def downgrade() -> None:
    op.drop_index("ix_x402gw_payments_state", table_name="x402gw_payments")
    op.drop_index("uq_x402gw_payments_live_payment_identifier", table_name="x402gw_payments")
    op.drop_index("uq_x402gw_payments_live_authorization", table_name="x402gw_payments")
    op.drop_table("x402gw_payments")
