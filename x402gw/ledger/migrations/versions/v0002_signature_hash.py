"""The payment signature's SHA-256 on each record, so a repeat of the same signed payment can be
recognised without the chain (contract-wallet signatures cannot be checked offline).

Revision ID: 0002_signature_hash
Revises: 0001_ledger_tables
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_signature_hash"
down_revision: str | None = "0001_ledger_tables"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: no table copy, so the migration lock is held briefly.
    op.add_column("x402gw_payments", sa.Column("signature_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("x402gw_payments") as batch:
        batch.drop_column("signature_hash")
