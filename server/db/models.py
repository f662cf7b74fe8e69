"""SQLAlchemy 2 models; the Alembic revisions create exactly these tables.

``prospects.tags`` is a ``text[]`` with a GIN index on PostgreSQL and a JSON array on SQLite, where
``prospect_tags`` (one row per tag) serves the overlap pre-filter instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "Base",
    "CreditAccount",
    "CreditEntry",
    "CreditHold",
    "IdempotencyKey",
    "JobItemRow",
    "JobRow",
    "KnownAddress",
    "MailMessage",
    "PoolStat",
    "Prospect",
    "ProspectTag",
    "TagStat",
    "User",
    "Verdict",
]

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


# --- accounts, keys, credits, idempotency (revision 0003); times are epoch seconds ---------------


class User(Base):
    """An account holder; ``subject`` is the session token's ``sub``."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, unique=True)
    email: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    lookup_month: Mapped[str | None] = mapped_column(Text)
    lookups_used: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKey(Base):
    """An API key: its keyed hash (never the key), display prefix, scopes; revoked softly."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(
        Text, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    prefix: Mapped[str] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class CreditAccount(Base):
    """One row per user: ``balance`` credits, of which ``held`` are reserved by open holds."""

    __tablename__ = "credit_accounts"

    user_id: Mapped[str] = mapped_column(
        Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    balance: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("held >= 0 AND balance >= held", name="ck_credit_accounts_covered"),
    )


class CreditHold(Base):
    """A reservation: held -> captured | released | expired, once (credit_rules)."""

    __tablename__ = "credit_holds"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    amount: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(Text)
    operation: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    settled_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("user_id", "reference", name="uq_credit_holds_reference"),)


class CreditEntry(Base):
    """Append-only ledger line; (user, kind, reference) is unique, so a charge books once."""

    __tablename__ = "credit_entries"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(BigInteger)
    operation: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("user_id", "kind", "reference", name="uq_credit_entries_reference"),
        Index("ix_credit_entries_user", "user_id", "id"),
    )


class IdempotencyKey(Base):
    """A stored Idempotency-Key: fingerprint, then the response once the first run finished."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)


# --- durable jobs (revision 0002) ----------------------------------------------------------

JOB_STATES = "'queued', 'running', 'cancel_requested', 'succeeded', 'failed', 'cancelled'"
ITEM_STATES = "'pending', 'running', 'done', 'failed', 'skipped'"


class JobRow(Base):
    """One background job (server.jobs): owner, kind, bounded JSON payload, state and counts.

    Times are epoch seconds (floats) so lease arithmetic is the same SQL on both backends.
    ``lease_owner``/``lease_expires`` hold the worker running the job (or, once the job is
    terminal, delivering its terminal hook); ``hooked_at`` is set when that hook returned.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    result: Mapped[Any | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer)
    hooked_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint(f"state IN ({JOB_STATES})", name="ck_jobs_state"),
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        Index("ix_jobs_state_lease_expires", "state", "lease_expires"),
        Index("ix_jobs_hooked_at_state", "hooked_at", "state"),
    )


class JobItemRow(Base):
    """One input row of a bulk job; (job_id, idx) is unique, so a row is completed once."""

    __tablename__ = "job_items"

    job_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    input: Mapped[Any] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    result: Mapped[Any | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[float] = mapped_column(Float)
    # The worker running the row and until when (revision 0006): several workers share a job.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint(f"state IN ({ITEM_STATES})", name="ck_job_items_state"),
        Index("ix_job_items_job_id_state", "job_id", "state"),
    )


class KnownAddress(Base):
    """A confirmed address and its owner's name: the evidence learned patterns come from
    (revision 0004). Shared knowledge: pattern shares are computed over every tenant's finds."""

    __tablename__ = "known_addresses"

    email: Mapped[str] = mapped_column(Text, primary_key=True)
    domain: Mapped[str] = mapped_column(Text, index=True)
    owner_name: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    confirmed_at: Mapped[float] = mapped_column(Float)


class Verdict(Base):
    """The last SMTP verification of an address (revision 0005): a repeat within the cache
    window is answered from here, free."""

    __tablename__ = "verdicts"

    email: Mapped[str] = mapped_column(Text, primary_key=True)
    result: Mapped[str] = mapped_column(Text)
    verified_at: Mapped[float] = mapped_column(Float, index=True)


# --- the BaviMail outbox (revision 0010) -------------------------------------------------------

MAIL_STATES = "'queued', 'sending', 'sent', 'failed', 'cancelled'"


class MailMessage(Base):
    """One outgoing message (server.mail.outbox): its signed bytes, envelope and state.

    ``next_attempt_at`` is when a worker may take it (``scheduled_at``, or later after a deferral);
    ``attempt_token`` marks the hand-off in flight, ``relay_queue_id`` the relay's ``queued as``.
    """

    __tablename__ = "mail_messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    from_address: Mapped[str] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(Text)
    envelope_from: Mapped[str] = mapped_column(Text)
    recipients: Mapped[Any] = mapped_column(JSON)
    headers_view: Mapped[Any] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(Text)
    tags_key: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text, unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    scheduled_at: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    handed_off_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[float | None] = mapped_column(Float)
    attempt_token: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    relay_queue_id: Mapped[str | None] = mapped_column(Text)
    relay_reply: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    suppressed: Mapped[Any | None] = mapped_column(JSON)

    __table_args__ = (
        CheckConstraint(f"state IN ({MAIL_STATES})", name="ck_mail_messages_state"),
        Index("ix_mail_messages_user_id_id", "user_id", "id"),
        Index("ix_mail_messages_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_mail_messages_domain_created_at", "domain", "created_at"),
        Index("ix_mail_messages_from_address_created_at", "from_address", "created_at"),
    )
