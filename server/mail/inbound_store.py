"""Received messages, conversations and bounces in the database (SQLite and PostgreSQL).

A conversation is found through ``mail_thread_refs`` (Message-ID -> conversation, per user):
inbound messages add their own ids as they are stored, outbound ones through
:meth:`InboundStore.link_outbound` when they are sent, so a reply finds its thread either way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.models import (
    InboundEmail,
    MailBounce,
    MailConversation,
    MailMessage,
    MailThreadRef,
)
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id
from server.mail.dsn import RecipientStatus
from server.mail.inbound_parse import ParsedMessage
from server.mail.inbound_ports import SentMessage
from server.mail.threads import candidate_ids, thread_for
from server.webhooks.mail_events import bounce_events, inbound_event

__all__ = ["AfterAdd", "ConversationRow", "InboundRow", "InboundStore", "ThreadRefOutboundLookup"]

INBOUND_PREFIX = "inb"
CONVERSATION_PREFIX = "cnv"
_IN = cast(sa.Table, InboundEmail.__table__)
_CONV = cast(sa.Table, MailConversation.__table__)
_REF = cast(sa.Table, MailThreadRef.__table__)
_BOUNCE = cast(sa.Table, MailBounce.__table__)
_OUT = cast(sa.Table, MailMessage.__table__)
_MAX_TEXT = 1_000_000  # characters of a body kept in the row (the raw message has it all)


@dataclass(frozen=True)
class InboundRow:
    """A stored received message."""

    id: str
    user_id: str
    conversation_id: str | None
    kind: str
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    mail_from: str
    rcpt_to: list[str]
    from_address: str | None
    from_name: str | None
    to: list[str]
    cc: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: list[list[str]]
    attachments: list[dict[str, Any]]
    auto_reply: str | None
    size: int
    raw_key: str
    sent_date: float | None
    received_at: float


@dataclass(frozen=True)
class ConversationRow:
    """A thread: subject (of its first message), counts, last activity."""

    id: str
    user_id: str
    subject: str
    message_count: int
    inbound_count: int
    last_message_at: float
    created_at: float


@dataclass(frozen=True)
class ThreadMessage:
    """One message of a conversation: inbound (an ``inb_`` id) or outbound (the sent id)."""

    source: str
    ref_id: str
    message_id: str
    created_at: float


def _inbound(row: Any) -> InboundRow:
    m = row._mapping
    return InboundRow(
        id=m["id"],
        user_id=m["user_id"],
        conversation_id=m["conversation_id"],
        kind=m["kind"],
        message_id=m["message_id"],
        in_reply_to=list(m["in_reply_to"]),
        references=list(m["reference_ids"]),
        mail_from=m["mail_from"],
        rcpt_to=list(m["rcpt_to"]),
        from_address=m["from_address"],
        from_name=m["from_name"],
        to=list(m["to_addresses"]),
        cc=list(m["cc_addresses"]),
        subject=m["subject"],
        text=m["text_body"],
        html=m["html_body"],
        headers=[list(h) for h in m["headers"]],
        attachments=list(m["attachments"]),
        auto_reply=m["auto_reply"],
        size=int(m["size_bytes"]),
        raw_key=m["raw_key"],
        sent_date=m["sent_date"],
        received_at=float(m["received_at"]),
    )


def _conversation(row: Any) -> ConversationRow:
    m = row._mapping
    return ConversationRow(
        id=m["id"],
        user_id=m["user_id"],
        subject=m["subject"],
        message_count=int(m["message_count"]),
        inbound_count=int(m["inbound_count"]),
        last_message_at=float(m["last_message_at"]),
        created_at=float(m["created_at"]),
    )


def _page(query: Any, table: Any, user_id: str, after: str | None, offset: int, limit: int) -> Any:
    query = query.where(table.c.user_id == user_id)
    return newest_first(query, table.c.id, after=after, offset=offset, limit=limit + 1)


AfterAdd = Callable[[InboundRow], Awaitable[object]]
"""Run by :meth:`InboundStore.add` after a received message is committed (a DSN too: the hook
reads ``kind``), so another module reacts to it without wrapping the store (campaign reply
stops: :mod:`server.campaigns.stops`)."""


class InboundStore:
    """Reads and writes of the inbound tables; every read filters on the owner. ``after_add``
    hooks run, in order, on each message :meth:`add` stored."""

    def __init__(self, engine: AsyncEngine, after_add: Sequence[AfterAdd] = ()) -> None:
        self.engine = engine
        self.after_add = tuple(after_add)

    # --- threading -------------------------------------------------------------------------------

    async def _known(
        self, conn: AsyncConnection, user_id: str, candidates: Sequence[str]
    ) -> dict[str, str]:
        if not candidates:
            return {}
        rows = await conn.execute(
            sa.select(_REF.c.message_id, _REF.c.conversation_id).where(
                _REF.c.user_id == user_id, _REF.c.message_id.in_(list(candidates))
            )
        )
        return {r.message_id: r.conversation_id for r in rows}

    async def _attach(
        self,
        conn: AsyncConnection,
        user_id: str,
        *,
        message_id: str | None,
        in_reply_to: Sequence[str],
        references: Sequence[str],
        subject: str,
        source: str,
        ref_id: str,
        now: float,
    ) -> str:
        """Put a message in its thread (a new one if no reference is known) and count it."""
        known = await self._known(conn, user_id, candidate_ids(message_id, in_reply_to, references))
        conv_id, created = thread_for(
            message_id, in_reply_to, references, known, lambda: new_id(CONVERSATION_PREFIX)
        )
        inbound = 1 if source == "inbound" else 0
        if created:
            await conn.execute(
                _CONV.insert().values(
                    id=conv_id,
                    user_id=user_id,
                    subject=subject[:2000],
                    message_count=1,
                    inbound_count=inbound,
                    last_message_at=now,
                    created_at=now,
                )
            )
        else:
            await conn.execute(
                _CONV.update()
                .where(_CONV.c.id == conv_id, _CONV.c.user_id == user_id)
                .values(
                    message_count=_CONV.c.message_count + 1,
                    inbound_count=_CONV.c.inbound_count + inbound,
                    last_message_at=sa.func.greatest(_CONV.c.last_message_at, now)
                    if conn.dialect.name == "postgresql"
                    else sa.func.max(_CONV.c.last_message_at, now),
                )
            )
        if message_id and message_id not in known:
            await conn.execute(
                _REF.insert().values(
                    user_id=user_id,
                    message_id=message_id,
                    conversation_id=conv_id,
                    source=source,
                    ref_id=ref_id,
                    created_at=now,
                )
            )
        return conv_id

    async def thread_of(self, user_id: str, message_id: str) -> str | None:
        """The conversation a Message-ID of the user's is in."""
        async with read_connection(self.engine) as conn:
            return (await self._known(conn, user_id, [message_id])).get(message_id)

    async def link_outbound(
        self,
        user_id: str,
        *,
        sent_message_id: str,
        message_id: str,
        in_reply_to: Sequence[str] = (),
        references: Sequence[str] = (),
        subject: str = "",
        now: float | None = None,
        conn: AsyncConnection | None = None,
    ) -> str:
        """Thread a message we sent (the outbox calls this at hand-off); its conversation id.
        Inside the caller's transaction when ``conn`` is given (campaign sends)."""
        values: dict[str, Any] = {
            "message_id": message_id,
            "in_reply_to": in_reply_to,
            "references": references,
            "subject": subject,
            "source": "outbound",
            "ref_id": sent_message_id,
            "now": time.time() if now is None else now,
        }
        if conn is not None:
            return await self._attach(conn, user_id, **values)
        async with write_transaction(self.engine) as own:
            return await self._attach(own, user_id, **values)

    # --- inbound messages --------------------------------------------------------------------------

    async def add(
        self,
        user_id: str,
        *,
        inbound_id: str,
        parsed: ParsedMessage,
        kind: str,
        mail_from: str,
        rcpt_to: Sequence[str],
        raw_key: str,
        auto_reply: str | None,
        thread: bool = True,
        now: float | None = None,
    ) -> InboundRow:
        """Store a received message (threaded unless ``thread`` is false, as for DSNs), then run
        the ``after_add`` hooks on it."""
        now = time.time() if now is None else now
        attachments = [
            {
                "index": a.index,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "content_id": a.content_id,
                "inline": a.inline,
            }
            for a in parsed.attachments
        ]
        async with write_transaction(self.engine) as conn:
            conv_id = None
            if thread:
                conv_id = await self._attach(
                    conn,
                    user_id,
                    message_id=parsed.message_id,
                    in_reply_to=parsed.in_reply_to,
                    references=parsed.references,
                    subject=parsed.subject,
                    source="inbound",
                    ref_id=inbound_id,
                    now=now,
                )
            await conn.execute(
                _IN.insert().values(
                    id=inbound_id,
                    user_id=user_id,
                    conversation_id=conv_id,
                    kind=kind,
                    message_id=parsed.message_id,
                    in_reply_to=list(parsed.in_reply_to),
                    reference_ids=list(parsed.references),
                    mail_from=mail_from[:320],
                    rcpt_to=list(rcpt_to),
                    from_address=parsed.from_address,
                    from_name=parsed.from_name,
                    to_addresses=list(parsed.to),
                    cc_addresses=list(parsed.cc),
                    subject=parsed.subject,
                    text_body=parsed.text[:_MAX_TEXT] if parsed.text is not None else None,
                    html_body=parsed.html[:_MAX_TEXT] if parsed.html is not None else None,
                    headers=[list(h) for h in parsed.headers],
                    attachments=attachments,
                    auto_reply=auto_reply,
                    size_bytes=parsed.size,
                    raw_key=raw_key,
                    sent_date=parsed.date,
                    received_at=now,
                )
            )
            row = (await conn.execute(sa.select(_IN).where(_IN.c.id == inbound_id))).one()
            if kind == "message":  # a DSN raises email.bounced instead (add_bounces)
                await inbound_event(conn, user_id, dict(row._mapping))
        stored = _inbound(row)
        for hook in self.after_add:
            await hook(stored)
        return stored

    async def get(self, user_id: str, inbound_id: str) -> InboundRow | None:
        """The user's message, or None (another user's id too)."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(_IN).where(_IN.c.id == inbound_id, _IN.c.user_id == user_id)
                )
            ).first()
        return _inbound(row) if row is not None else None

    async def list_inbound(
        self, user_id: str, *, after: str | None, offset: int, limit: int
    ) -> list[InboundRow]:
        """Newest first, ``limit + 1`` rows (the caller pages)."""
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(_page(sa.select(_IN), _IN, user_id, after, offset, limit))
            return [_inbound(r) for r in rows]

    async def delete(self, user_id: str, inbound_id: str) -> InboundRow | None:
        """Delete the user's message (its thread reference and count too); the deleted row."""
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(_IN).where(_IN.c.id == inbound_id, _IN.c.user_id == user_id)
                )
            ).first()
            if row is None:
                return None
            found = _inbound(row)
            await conn.execute(_IN.delete().where(_IN.c.id == inbound_id))
            await conn.execute(
                _REF.delete().where(
                    _REF.c.user_id == user_id,
                    _REF.c.source == "inbound",
                    _REF.c.ref_id == inbound_id,
                )
            )
            if found.conversation_id is not None:
                await conn.execute(
                    _CONV.update()
                    .where(_CONV.c.id == found.conversation_id)
                    .values(
                        message_count=_CONV.c.message_count - 1,
                        inbound_count=_CONV.c.inbound_count - 1,
                    )
                )
                await conn.execute(
                    _CONV.delete().where(
                        _CONV.c.id == found.conversation_id, _CONV.c.message_count <= 0
                    )
                )
        return found

    # --- conversations -----------------------------------------------------------------------------

    async def conversations(
        self, user_id: str, *, after: str | None, offset: int, limit: int
    ) -> list[ConversationRow]:
        """Newest first, ``limit + 1`` rows."""
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(_page(sa.select(_CONV), _CONV, user_id, after, offset, limit))
            return [_conversation(r) for r in rows]

    async def conversation(
        self, user_id: str, conversation_id: str
    ) -> tuple[ConversationRow, list[ThreadMessage], list[InboundRow]] | None:
        """A conversation with its messages (oldest first) and its inbound rows."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(_CONV).where(
                        _CONV.c.id == conversation_id, _CONV.c.user_id == user_id
                    )
                )
            ).first()
            if row is None:
                return None
            refs = await conn.execute(
                sa.select(_REF)
                .where(_REF.c.user_id == user_id, _REF.c.conversation_id == conversation_id)
                .order_by(_REF.c.created_at, _REF.c.ref_id)
                .limit(1000)
            )
            messages = [
                ThreadMessage(r.source, r.ref_id, r.message_id, float(r.created_at)) for r in refs
            ]
            inbound = await conn.execute(
                sa.select(_IN)
                .where(_IN.c.user_id == user_id, _IN.c.conversation_id == conversation_id)
                .order_by(_IN.c.id)
                .limit(1000)
            )
            return _conversation(row), messages, [_inbound(r) for r in inbound]

    # --- bounces -------------------------------------------------------------------------------------

    async def add_bounces(
        self,
        user_id: str,
        *,
        inbound_id: str | None,
        sent_message_id: str | None,
        recipients: Sequence[RecipientStatus],
        now: float | None = None,
    ) -> None:
        """One row per reported recipient."""
        now = time.time() if now is None else now
        rows = [
            {
                "user_id": user_id,
                "inbound_email_id": inbound_id,
                "sent_message_id": sent_message_id,
                "recipient": (r.final_recipient or r.original_recipient or "")[:320],
                "kind": r.kind,
                "status": r.status,
                "diagnostic": (r.diagnostic_code or "")[:2000] or None,
                "created_at": now,
            }
            for r in recipients
        ]
        if rows:
            async with write_transaction(self.engine) as conn:
                await conn.execute(_BOUNCE.insert(), rows)
                await bounce_events(
                    conn,
                    user_id,
                    inbound_id=inbound_id,
                    sent_message_id=sent_message_id,
                    bounces=rows,
                )

    async def bounce_counts(self, user_id: str, recipient: str) -> dict[str, int]:
        """How many bounces of each kind an address had (soft ones are counted here)."""
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(
                sa.select(_BOUNCE.c.kind, sa.func.count())
                .where(_BOUNCE.c.user_id == user_id, _BOUNCE.c.recipient == recipient.lower())
                .group_by(_BOUNCE.c.kind)
            )
            return {str(kind): int(count) for kind, count in rows}

    async def bounces_of(
        self, sent_message_id: str, user_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The bounces linked to a sent message (for the outbox's view of it; ``user_id``:
        the owner's only), oldest first."""
        where = [_BOUNCE.c.sent_message_id == sent_message_id]
        if user_id is not None:
            where.append(_BOUNCE.c.user_id == user_id)
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(
                sa.select(_BOUNCE).where(*where).limit(limit).order_by(_BOUNCE.c.id)
            )
            return [dict(r._mapping) for r in rows]


class ThreadRefOutboundLookup:
    """An :class:`~server.mail.inbound_ports.OutboundLookup` over the outbox (``mail_messages``:
    Message-ID, id, relay queue id) and the outbound thread references (what
    :meth:`InboundStore.link_outbound` recorded, for messages sent elsewhere)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _one(self, where: sa.ColumnElement[bool]) -> SentMessage | None:
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(_OUT.c.id, _OUT.c.user_id, _OUT.c.recipients, _OUT.c.domain)
                    .where(where)
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        recipients = row.recipients if isinstance(row.recipients, list) else []
        return SentMessage(
            id=row.id,
            user_id=row.user_id,
            recipients=tuple(str(r).lower() for r in recipients),
            domain=str(row.domain).lower(),
        )

    async def find(self, message_id: str) -> SentMessage | None:
        """The sent message with this Message-ID."""
        if not message_id or len(message_id) > 998:
            return None
        sent = await self._one(_OUT.c.message_id == f"<{message_id}>")
        if sent is not None:
            return sent
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(_REF.c.ref_id, _REF.c.user_id)
                    .where(_REF.c.message_id == message_id, _REF.c.source == "outbound")
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        return await self.by_id(row.ref_id) or SentMessage(id=row.ref_id, user_id=row.user_id)

    async def by_id(self, email_id: str) -> SentMessage | None:
        """The outbox message ``email_id``."""
        return await self._one(_OUT.c.id == email_id) if len(email_id) <= 40 else None

    async def by_queue_id(self, queue_id: str) -> SentMessage | None:
        """The outbox message the relay queued as ``queue_id``."""
        return await self._one(_OUT.c.relay_queue_id == queue_id) if len(queue_id) <= 40 else None
