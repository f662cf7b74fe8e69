"""Prospect pool: prospects, tag statistics, and the SQLite tag index table.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the pool tables; the tag overlap index differs per backend."""
    postgres = op.get_bind().dialect.name == "postgresql"
    big_id = sa.BigInteger() if postgres else sa.Integer()
    tags_type = postgresql.ARRAY(sa.Text()) if postgres else sa.JSON()
    op.create_table(
        "prospects",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("title", sa.Text()),
        sa.Column("company", sa.Text()),
        sa.Column("domain", sa.Text()),
        sa.Column("linkedin_url", sa.Text()),
        sa.Column("email", sa.Text()),
        sa.Column("location", sa.Text()),
        sa.Column("tags", tags_type, nullable=False),
        sa.Column("company_key", sa.Text()),
        sa.Column("title_key", sa.Text()),
        sa.Column("location_key", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prospects"),
    )
    op.create_index("ix_prospects_domain", "prospects", ["domain"])
    op.create_index("ix_prospects_company_key", "prospects", ["company_key"])
    if postgres:
        op.create_index("ix_prospects_tags_gin", "prospects", ["tags"], postgresql_using="gin")
    else:
        op.create_table(
            "prospect_tags",
            sa.Column("tag", sa.Text(), nullable=False),
            sa.Column(
                "prospect_id",
                sa.Integer(),
                sa.ForeignKey(
                    "prospects.id",
                    ondelete="CASCADE",
                    name="fk_prospect_tags_prospect_id_prospects",
                ),
                nullable=False,
            ),
            sa.PrimaryKeyConstraint("tag", "prospect_id", name="pk_prospect_tags"),
            sqlite_with_rowid=False,
        )
        op.create_index("ix_prospect_tags_prospect_id", "prospect_tags", ["prospect_id"])
    op.create_table(
        "tag_stats",
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column("df", sa.BigInteger(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tag", name="pk_tag_stats"),
    )
    op.create_table(
        "prospect_pool",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prospect_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prospect_pool"),
    )
    op.execute("INSERT INTO prospect_pool (id, prospect_count) VALUES (1, 0)")


def downgrade() -> None:
    """Drop the pool tables."""
    op.drop_table("prospect_pool")
    op.drop_table("tag_stats")
    if op.get_bind().dialect.name != "postgresql":
        op.drop_table("prospect_tags")
    op.drop_table("prospects")
