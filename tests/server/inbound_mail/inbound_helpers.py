"""Shared pieces of the inbound mail tests: users, a running endpoint, recording ports."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from server.auth.store import AccountStore
from server.db.engine import Database
from server.mail.inbound_ports import LocalRawStore, SentMessage, StaticRouting
from server.mail.inbound_smtp import InboundConfig, InboundHandler, inbound_server
from server.mail.inbound_store import InboundStore, ThreadRefOutboundLookup


async def make_users(db: Database, *subjects: str) -> list[str]:
    """User ids for token subjects (created on first sight)."""
    accounts = AccountStore(db.engine, b"k" * 32)
    ids = []
    for subject in subjects:
        user, _ = await accounts.user_for_subject(subject, email=f"{subject}@x.test", plan="paid")
        ids.append(user.id)
    return ids


@dataclass
class RecordingSuppression:
    """A suppression sink that remembers what it was given."""

    entries: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)

    async def add_hard_bounce(
        self, user_id: str, address: str, *, status: str | None, sent_message_id: str | None
    ) -> None:
        self.entries.append((user_id, address, status, sent_message_id))


@dataclass
class Endpoint:
    """A running inbound endpoint and its parts."""

    handler: InboundHandler
    store: InboundStore
    raw: LocalRawStore
    suppression: RecordingSuppression
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_endpoint(
    db: Database,
    root: Path,
    domains: Mapping[str, str],
    *,
    config: InboundConfig | None = None,
    port: int = 0,
    outbound: object | None = None,
) -> AsyncIterator[Endpoint]:
    """The endpoint on 127.0.0.1 (a free port unless given) over ``db`` and files in ``root``."""
    store = InboundStore(db.engine)
    raw = LocalRawStore(root)
    suppression = RecordingSuppression()
    handler = InboundHandler(
        store=store,
        raw=raw,
        routing=StaticRouting(domains),
        outbound=outbound or ThreadRefOutboundLookup(db.engine),  # type: ignore[arg-type]
        suppression=suppression,
        config=config or InboundConfig(bounce_domains=frozenset({"rp.acme.test"})),
    )
    async with inbound_server(handler, "127.0.0.1", port) as server:
        bound = server.sockets[0].getsockname()[1]
        yield Endpoint(handler, store, raw, suppression, bound)


@dataclass
class FixedOutbound:
    """An outbound lookup over a fixed table (as the outbox would answer)."""

    sent: dict[str, SentMessage]

    async def find(self, message_id: str) -> SentMessage | None:
        return self.sent.get(message_id)

    async def by_id(self, email_id: str) -> SentMessage | None:
        return next((m for m in self.sent.values() if m.id == email_id), None)

    async def by_queue_id(self, queue_id: str) -> SentMessage | None:
        return None


def message(
    *,
    sender: str = "Bob <bob@client.test>",
    to: str = "ann@acme.test",
    subject: str = "Hello",
    message_id: str | None = "<m1@client.test>",
    in_reply_to: str | None = None,
    body: str = "Hi Ann\n",
    attachment: bytes | None = None,
) -> bytes:
    """A small RFC 5322 message."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="offer.pdf")
    return msg.as_bytes()


def dsn(original_message_id: str, recipients: list[tuple[str, str, str]]) -> bytes:
    """A Postfix-shaped DSN for ``(recipient, action, status)`` rows."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {r}\nAction: {a}\nStatus: {s}\n"
        f"Diagnostic-Code: smtp; {s[0]}50 {s} refused\n\n"
        for r, a, s in recipients
    )
    return (
        "From: MAILER-DAEMON@mx.test\nTo: bounces@rp.acme.test\nSubject: Undelivered Mail\n"
        "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nIt failed.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.test\n\n"
        f"{blocks}"
        "--B\nContent-Type: text/rfc822-headers\n\n"
        f"From: ann@acme.test\nMessage-ID: <{original_message_id}>\nSubject: offer\n\n--B--\n"
    ).encode()
