"""Known addresses: confirmed (address, owner) pairs that per-domain pattern learning reads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``known_addresses``."""
    op.create_table(
        "known_addresses",
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("owner_name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("confirmed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("email", name="pk_known_addresses"),
    )
    op.create_index("ix_known_addresses_domain", "known_addresses", ["domain"])


def downgrade() -> None:
    """Drop ``known_addresses``."""
    op.drop_table("known_addresses")
