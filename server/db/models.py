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
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "Base",
    "CreditAccount",
    "CreditEntry",
    "CreditHold",
    "Dataset",
    "DatasetRow",
    "Extraction",
    "IdempotencyKey",
    "InboundEmail",
    "JobItemRow",
    "JobRow",
    "KnownAddress",
    "MailAlias",
    "MailBounce",
    "MailConversation",
    "MailDomain",
    "MailEvent",
    "MailLink",
    "MailMessage",
    "MailThreadRef",
    "PoolStat",
    "ProcessingSession",
    "Prospect",
    "ProspectTag",
    "SenderProfile",
    "SenderPrompt",
    "Suppression",
    "TagStat",
    "TemplateRow",
    "User",
    "Verdict",
    "WebhookDelivery",
    "WebhookEndpoint",
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
ACTIVE_JOB_STATES_SQL = "state IN ('queued', 'running', 'cancel_requested')"
"""Jobs not finished yet: at most one of them holds a given ``exclusive_key`` (revision 0015)."""
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
    exclusive_key: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint(f"state IN ({JOB_STATES})", name="ck_jobs_state"),
        Index(
            "uq_jobs_exclusive_key_active",
            "exclusive_key",
            unique=True,
            sqlite_where=text(ACTIVE_JOB_STATES_SQL),
            postgresql_where=text(ACTIVE_JOB_STATES_SQL),
        ),
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


# --- data resources (revision 0007): datasets and their rows, processing sessions, extractions ---

SESSION_STATES = "'created', 'processing', 'completed', 'failed', 'cancelled'"


class Dataset(Base):
    """A user's dataset: rows with their original columns (``columns``, in file order) plus the
    columns our jobs add (``added_columns``: risk, found email, LinkedIn URL, ...)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    source_type: Mapped[str] = mapped_column(String(32))
    pipeline_type: Mapped[str] = mapped_column(String(32))
    session_id: Mapped[str | None] = mapped_column(String(40))
    columns: Mapped[Any] = mapped_column(JSON)
    added_columns: Mapped[Any] = mapped_column(JSON)
    mapping: Mapped[Any] = mapped_column(JSON)
    row_count: Mapped[int] = mapped_column(Integer)
    rejected_count: Mapped[int] = mapped_column(Integer)
    file_key: Mapped[str | None] = mapped_column(Text)
    download_count: Mapped[int] = mapped_column(Integer)
    last_downloaded_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    archived_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_datasets_user_id_id", "user_id", "id"),
        Index("ix_datasets_session_id", "session_id"),
    )


class DatasetRow(Base):
    """One row of a dataset: ``idx`` is its 0-based position (contiguous; a prune re-indexes),
    ``line`` its line in the uploaded file, ``data`` the original cells, ``added`` our columns."""

    __tablename__ = "dataset_rows"

    dataset_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[Any] = mapped_column(JSON)
    added: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)


class ProcessingSession(Base):
    """A processing session: sender data, its dataset, the enrichments requested and the job
    running them (``job_id``)."""

    __tablename__ = "processing_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    pipeline_type: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(20))
    sender_data: Mapped[Any] = mapped_column(JSON)
    sender_profile_id: Mapped[str | None] = mapped_column(String(40))
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    enrichments: Mapped[Any] = mapped_column(JSON)
    job_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint(f"state IN ({SESSION_STATES})", name="ck_processing_sessions_state"),
        Index("ix_processing_sessions_user_id_id", "user_id", "id"),
    )


class Extraction(Base):
    """A lead list saved by the browser extension: a JSON file in storage (``storage_key``)."""

    __tablename__ = "extractions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(Text)
    lead_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    columns: Mapped[Any] = mapped_column(JSON)
    meta: Mapped[Any] = mapped_column(JSON)
    session_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_extractions_user_id_id", "user_id", "id"),)


# --- templates, suppression, sender profiles (revision 0008); times are epoch seconds -----------


class TemplateRow(Base):
    """An email template: subject, text body and optional HTML body with ``{{variables}}``;
    ``name_key`` is the case-folded name the list search matches on."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    name_key: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_templates_user_id_id", "user_id", "id"),)


class Suppression(Base):
    """A suppressed address or domain (normalised ``value``); (user, value) is unique, so an
    entry is added once and a batch of addresses is checked with one indexed ``IN`` query."""

    __tablename__ = "suppressions"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("user_id", "value", name="uq_suppressions_user_value"),
        CheckConstraint("kind IN ('email', 'domain')", name="ck_suppressions_kind"),
        Index("ix_suppressions_user_id_id", "user_id", "id"),
    )


class SenderProfile(Base):
    """Who a campaign writes as: a name and free-form ``sender_data``; at most one per user has
    ``is_default``."""

    __tablename__ = "sender_profiles"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    name_key: Mapped[str] = mapped_column(Text)
    sender_data: Mapped[Any] = mapped_column(JSON)
    is_default: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_sender_profiles_user_id_id", "user_id", "id"),)


class SenderPrompt(Base):
    """A named prompt of a sender profile; (profile, name) is unique."""

    __tablename__ = "sender_prompts"

    profile_id: Mapped[str] = mapped_column(
        Text, ForeignKey("sender_profiles.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class InboundEmail(Base):
    """A message our SMTP endpoint received for a user's domain: the parsed record; the raw
    bytes live in the raw store under ``raw_key`` (attachments are re-read from them)."""

    __tablename__ = "inbound_emails"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    conversation_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str | None] = mapped_column(Text)
    in_reply_to: Mapped[Any] = mapped_column(JSON)
    reference_ids: Mapped[Any] = mapped_column(JSON)
    mail_from: Mapped[str] = mapped_column(Text)
    rcpt_to: Mapped[Any] = mapped_column(JSON)
    from_address: Mapped[str | None] = mapped_column(Text)
    from_name: Mapped[str | None] = mapped_column(Text)
    to_addresses: Mapped[Any] = mapped_column(JSON)
    cc_addresses: Mapped[Any] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[Any] = mapped_column(JSON)
    attachments: Mapped[Any] = mapped_column(JSON)
    auto_reply: Mapped[str | None] = mapped_column(String(20))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    raw_key: Mapped[str] = mapped_column(Text)
    sent_date: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("kind IN ('message', 'dsn')", name="ck_inbound_emails_kind"),
        Index("ix_inbound_emails_user_id_id", "user_id", "id"),
        Index("ix_inbound_emails_conversation_id", "conversation_id"),
    )


class MailConversation(Base):
    """A thread of inbound and outbound messages linked by their Message-ID references."""

    __tablename__ = "mail_conversations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(Text)
    message_count: Mapped[int] = mapped_column(Integer)
    inbound_count: Mapped[int] = mapped_column(Integer)
    last_message_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_mail_conversations_user_id_id", "user_id", "id"),)


class MailThreadRef(Base):
    """A Message-ID of a user's thread: which conversation it is in and which message it is
    (``source`` inbound: an ``inbound_emails`` id; outbound: the sent message's id)."""

    __tablename__ = "mail_thread_refs"

    user_id: Mapped[str] = mapped_column(
        Text, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[str] = mapped_column(Text, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(16))
    ref_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("source IN ('inbound', 'outbound')", name="ck_mail_thread_refs_source"),
        Index("ix_mail_thread_refs_conversation_id", "conversation_id"),
    )


class MailBounce(Base):
    """One recipient of a delivery status notification: its bounce kind (hard, soft, policy)
    and the sent message it returns, when known."""

    __tablename__ = "mail_bounces"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    inbound_email_id: Mapped[str | None] = mapped_column(String(40))
    sent_message_id: Mapped[str | None] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("kind IN ('hard', 'soft', 'policy', 'none')", name="ck_mail_bounces_kind"),
        Index("ix_mail_bounces_user_id_recipient", "user_id", "recipient"),
        Index("ix_mail_bounces_sent_message_id", "sent_message_id"),
    )


# --- customer webhooks (revision 0012) -------------------------------------------------------

DELIVERY_STATES = "'pending', 'delivering', 'delivered', 'failed'"


class WebhookEndpoint(Base):
    """A customer's webhook URL: the event types it takes (empty: all), its sealed signing
    secret, and its health (``consecutive_failures``; disabled once dead)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    event_types: Mapped[Any] = mapped_column(JSON)
    secret_sealed: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_at: Mapped[float | None] = mapped_column(Float)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer)
    last_success_at: Mapped[float | None] = mapped_column(Float)
    last_failure_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_webhook_endpoints_user_id_id", "user_id", "id"),)


class WebhookDelivery(Base):
    """One event for one endpoint: the exact body sent, its state (server.webhooks.rules) and
    attempts; ``id`` is the ``webhook-id`` every attempt carries."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    user_id: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[float | None] = mapped_column(Float)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint(f"state IN ({DELIVERY_STATES})", name="ck_webhook_deliveries_state"),
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_event"),
    )


class MailDomain(Base):
    """A user's sending domain (revision 0009): its DKIM keys (JSON list of selector, public key,
    state and the private key sealed with a key derived from the master secret), switches, and
    the last DNS check per record."""

    __tablename__ = "mail_domains"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    dkim_keys: Mapped[Any] = mapped_column(JSON)
    tracking: Mapped[bool] = mapped_column(Boolean)
    inbound: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(Text)
    checks: Mapped[Any | None] = mapped_column(JSON)
    checked_at: Mapped[float | None] = mapped_column(Float)
    verified_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_mail_domains_user_id_name"),
        CheckConstraint(
            "status IN ('not_started', 'pending', 'verified')", name="ck_mail_domains_status"
        ),
    )


class MailAlias(Base):
    """A sending address on a verified domain (revision 0009): display name, reply-to and
    forwarding rules (JSON)."""

    __tablename__ = "mail_aliases"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    domain_id: Mapped[str] = mapped_column(
        Text, ForeignKey("mail_domains.id", ondelete="CASCADE"), index=True
    )
    local_part: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str | None] = mapped_column(Text)
    reply_to: Mapped[str | None] = mapped_column(Text)
    forwarding: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("domain_id", "local_part", name="uq_mail_aliases_domain_id_local_part"),
        Index("ix_mail_aliases_user_id_id", "user_id", "id"),
    )


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
        Index("ix_mail_messages_relay_queue_id", "relay_queue_id"),
    )


# --- tracking (revision 0013) --------------------------------------------------------------------


class MailLink(Base):
    """A tracked link of a sent message: the click redirect reads the URL from here (never from
    the token), so a tracking link cannot be pointed anywhere else."""

    __tablename__ = "mail_links"

    email_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("mail_messages.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)


class MailEvent(Base):
    """An open or a click of a tracked message, with who made it (server.mail.tracking.Actor):
    machine opens and scanner clicks are kept and flagged, never counted as people."""

    __tablename__ = "mail_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("mail_messages.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(8))
    link_idx: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(16))
    user_agent: Mapped[str | None] = mapped_column(Text)
    at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("kind IN ('open', 'click')", name="ck_mail_events_kind"),
        Index("ix_mail_events_email_id_at", "email_id", "at"),
    )


# --- campaigns (revision 0014) -------------------------------------------------------------------

CAMPAIGN_STATES = "'draft', 'active', 'paused', 'completed', 'cancelled'"
CAMPAIGN_LEAD_STATES = "'pending', 'active', 'waiting_approval', 'stopped', 'completed', 'failed'"


class Campaign(Base):
    """A multi-step outreach campaign (server.campaigns).

    ``status`` is the user's own state (server.campaigns.rules); ``holds`` (JSON list of
    ``{code, detail, since}``) are system holds (domain failing DNS, bounce rate, daily cap) kept
    apart from it and lifted when their cause clears. ``schedule`` is ``{timezone, days, start,
    end, min_gap_seconds, jitter_seconds}``; ``sender_alias_ids`` the aliases sends rotate over.
    ``version`` grows on every change (optimistic concurrency for lifecycle transitions).
    """

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    name_key: Mapped[str | None] = mapped_column(Text)
    """The name case-folded (Unicode), what the list search matches on, on both backends."""
    status: Mapped[str] = mapped_column(String(16))
    holds: Mapped[Any] = mapped_column(JSON)
    dataset_id: Mapped[str | None] = mapped_column(Text)
    email_column: Mapped[str | None] = mapped_column(Text)
    sender_alias_ids: Mapped[Any] = mapped_column(JSON)
    schedule: Mapped[Any] = mapped_column(JSON)
    daily_cap: Mapped[int | None] = mapped_column(Integer)
    alias_daily_cap: Mapped[int | None] = mapped_column(Integer)
    requires_approval: Mapped[bool] = mapped_column(Boolean)
    stop_on_reply: Mapped[bool] = mapped_column(Boolean)
    track_opens: Mapped[bool] = mapped_column(Boolean)
    track_clicks: Mapped[bool] = mapped_column(Boolean)
    settings: Mapped[Any] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    launched_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint(f"status IN ({CAMPAIGN_STATES})", name="ck_campaigns_status"),
        Index("ix_campaigns_user_id_id", "user_id", "id"),
        Index("ix_campaigns_status", "status"),
    )


class CampaignStep(Base):
    """One step of a campaign's sequence: sent ``delay_seconds`` after the previous step (the
    first after launch). ``variants`` is a JSON list of ``{label, weight, template_id, subject,
    text, html}``; a lead's variant is a deterministic function of lead id and step."""

    __tablename__ = "campaign_steps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("campaigns.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    delay_seconds: Mapped[int] = mapped_column(Integer)
    variants: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("campaign_id", "position", name="uq_campaign_steps_campaign_id_position"),
    )


class CampaignLead(Base):
    """A lead of a campaign and where it stands in the sequence.

    ``next_position`` is the step to send next and ``due_at`` when it may go (NULL when nothing is
    due); ``stop_reason`` says why a stopped lead stopped (replied, bounced, unsubscribed, manual,
    suppressed); ``alias_id`` is the sticky sending alias, ``thread_message_id`` the first step's
    Message-ID (later steps reply in that thread; inbound replies match it). ``domain``,
    ``verdict``, ``verdict_detail`` and ``var_index`` are derived when the lead is stored
    (:mod:`server.campaigns.lead_index`) so launch checks count in SQL; NULL until derived.
    """

    __tablename__ = "campaign_leads"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("campaigns.id", ondelete="CASCADE")
    )
    user_id: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text)
    data: Mapped[Any] = mapped_column(JSON)
    row_index: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24))
    stop_reason: Mapped[str | None] = mapped_column(String(24))
    next_position: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[float | None] = mapped_column(Float)
    alias_id: Mapped[str | None] = mapped_column(Text)
    thread_message_id: Mapped[str | None] = mapped_column(Text)
    last_sent_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    domain: Mapped[str | None] = mapped_column(Text)
    verdict: Mapped[str | None] = mapped_column(String(16))
    verdict_detail: Mapped[str | None] = mapped_column(Text)
    var_index: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(f"status IN ({CAMPAIGN_LEAD_STATES})", name="ck_campaign_leads_status"),
        UniqueConstraint("campaign_id", "email", name="uq_campaign_leads_campaign_id_email"),
        Index("ix_campaign_leads_campaign_id_id", "campaign_id", "id"),
        Index("ix_campaign_leads_status_due_at", "status", "due_at"),
        Index("ix_campaign_leads_thread_message_id", "thread_message_id"),
    )


class CampaignDraft(Base):
    """A lead's rendered email for one step, awaiting or holding approval (the playground):
    ``state`` is draft or approved; the scheduler sends an approval-gated step only when
    approved, and sends exactly these bytes' subject and bodies."""

    __tablename__ = "campaign_drafts"

    lead_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("campaign_leads.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(40), index=True)
    variant: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    approved_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("state IN ('draft', 'approved')", name="ck_campaign_drafts_state"),
    )


class CampaignSend(Base):
    """The exactly-once record of a lead's step: the primary key (lead, position) is claimed in
    the same transaction that queues the message in the outbox, so a step can never be queued
    twice, whatever races or crashes."""

    __tablename__ = "campaign_sends"

    lead_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("campaign_leads.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(40))
    variant: Mapped[str] = mapped_column(String(16))
    alias_id: Mapped[str | None] = mapped_column(Text)
    email_id: Mapped[str | None] = mapped_column(String(40), index=True)
    queued_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_campaign_sends_campaign_id_queued_at", "campaign_id", "queued_at"),
        Index("ix_campaign_sends_alias_id_queued_at", "alias_id", "queued_at"),
    )


class CampaignEvent(Base):
    """A lead-level event that the mail tables do not hold themselves: replied, unsubscribed,
    stopped (manual), skipped (suppressed at send time). Sent, bounced, opened and clicked are
    read from the outbox, bounces and tracking tables through ``campaign_sends``."""

    __tablename__ = "campaign_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(40))
    lead_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("campaign_leads.id", ondelete="CASCADE")
    )
    position: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))
    email_id: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[Any | None] = mapped_column(JSON)
    at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_campaign_events_campaign_id_kind", "campaign_id", "kind"),
        Index("ix_campaign_events_lead_id_at", "lead_id", "at"),
        UniqueConstraint("lead_id", "kind", "email_id", name="uq_campaign_events_lead_kind_email"),
    )
