"""SQLAlchemy 2 models; the Alembic revisions create exactly these tables.

``prospects.tags`` is a ``text[]`` with a GIN index on PostgreSQL and a JSON array on SQLite, where
``prospect_tags`` (one row per tag) serves the overlap pre-filter instead.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "PoolStat", "Prospect", "ProspectTag", "TagStat"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")
TagList = JSON().with_variant(ARRAY(Text()), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with a naming convention so constraint names are stable across backends."""

    metadata = MetaData(naming_convention=NAMING)


class Prospect(Base):
    """One person in the prospect pool. ``*_key`` columns hold case-folded copies for filters."""

    __tablename__ = "prospects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    company: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(Text, index=True)
    linkedin_url: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(TagList)
    company_key: Mapped[str | None] = mapped_column(Text, index=True)
    title_key: Mapped[str | None] = mapped_column(Text)
    location_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_prospects_tags_gin", "tags", postgresql_using="gin"),)


class ProspectTag(Base):
    """SQLite only: (tag, prospect) pairs; the primary key doubles as the index on tag."""

    __tablename__ = "prospect_tags"

    tag: Mapped[str] = mapped_column(Text, primary_key=True)
    prospect_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("prospects.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class TagStat(Base):
    """Document frequency of each tag and its inverse-document-frequency weight."""

    __tablename__ = "tag_stats"

    tag: Mapped[str] = mapped_column(Text, primary_key=True)
    df: Mapped[int] = mapped_column(BigInteger)
    weight: Mapped[float] = mapped_column(Float)


class PoolStat(Base):
    """A single row (id 1) with the number of prospects, so searches need no COUNT(*)."""

    __tablename__ = "prospect_pool"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prospect_count: Mapped[int] = mapped_column(BigInteger)
