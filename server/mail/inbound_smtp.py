"""Our inbound SMTP endpoint (aiosmtpd on the application's event loop): accepts recipients on
domains with inbound on, stores each message's raw bytes and its parsed record before answering
250, threads it into a conversation, and routes delivery status notifications sent to a bounce
address (``bounces@…``, ``bounces+tag@…``) to the bounce handling: hard bounces go to
suppression, every reported recipient is recorded and linked to the sent message.

Replies: unknown domain 550 5.7.1 (we relay nothing); malformed recipient 550 5.1.3; too many
recipients 452 4.5.3; over the size limit 552 5.3.4 (aiosmtpd, at MAIL SIZE= or DATA); a
message we cannot parse 550 5.6.0; storage trouble 451 4.3.0 (the sender retries); more than
``max_sessions`` connections at once 421 4.7.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP

from server.ids import new_id
from server.mail.autoreply import detect_auto_reply
from server.mail.dsn import DeliveryReport, NotADsn, RecipientStatus, parse_dsn
from server.mail.inbound_parse import InboundParseError, ParsedMessage, ParseLimits, parse_message
from server.mail.inbound_ports import (
    InboundRouting,
    OutboundLookup,
    RawStore,
    SentMessage,
    SuppressionSink,
)
from server.mail.inbound_store import INBOUND_PREFIX, InboundStore
from server.mail.threads import candidate_ids
from server.mail.verp import verp_email_id

__all__ = ["InboundConfig", "InboundHandler", "Route", "inbound_server", "split_address"]

log = logging.getLogger("bavlio.inbound")

BOUNCE = "__bounce__"
"""The owner of a bounce-address recipient (decided per message, from the returned one)."""


@dataclass(frozen=True)
class InboundConfig:
    """The endpoint's limits and bounce addresses."""

    max_bytes: int = 10 * 1024 * 1024
    max_recipients: int = 100
    bounce_local_part: str = "bounces"
    bounce_domains: frozenset[str] = frozenset()
    """Return-path domains whose ``bounces[+tag]@`` takes DSNs even without inbound on."""
    return_path_subdomain: str | None = None
    """Sending domains' bounce subdomain (``bounces`` -> ``bounces.<domain>``): its VERP
    addresses (``bounces+<email id>@``, :mod:`server.mail.verp`) take DSNs."""
    hostname: str = "bavlio-inbound"
    max_sessions: int = 200
    """Concurrent SMTP sessions; one more is told ``421 4.7.0`` and disconnected."""
    max_sessions_per_peer: int = 20
    """Concurrent sessions from one client address (one host cannot take every session)."""
    max_session_seconds: float = 600.0
    """A session's whole life: aiosmtpd's idle timeout restarts at every line, so a client
    trickling NOOPs or data lines would otherwise hold its session for ever."""
    max_refused_recipients: int = 20
    """Refused RCPTs in one session before ``421 4.7.0`` and the end of it (every RCPT is a
    routing lookup; a dictionary attack gets a few)."""


@dataclass(frozen=True)
class Route:
    """Where a recipient's copy goes: a user's inbox, or the bounce pipeline."""

    address: str
    user_id: str


@dataclass
class _Routes:
    by_address: dict[str, Route] = field(default_factory=dict)


def split_address(address: str) -> tuple[str, str] | None:
    """``(local, domain)`` lower-cased, or None for anything that is not ``local@domain``."""
    if not address or len(address) > 320 or address.count("@") < 1:
        return None
    local, _, domain = address.rpartition("@")
    domain = domain.lower().rstrip(".")
    if (
        not local
        or not domain
        or any(c <= " " or c in "<>\x7f" or "\ud800" <= c <= "\udfff" for c in address)
    ):
        return None
    if len(local) > 64 or not all(label for label in domain.split(".")):
        return None
    return local.lower(), domain


class InboundHandler:
    """aiosmtpd hooks; :meth:`deliver` is the whole pipeline for one message."""

    def __init__(
        self,
        *,
        store: InboundStore,
        raw: RawStore,
        routing: InboundRouting,
        outbound: OutboundLookup,
        suppression: SuppressionSink,
        config: InboundConfig | None = None,
    ) -> None:
        self.store = store
        self.raw = raw
        self.routing = routing
        self.outbound = outbound
        self.suppression = suppression
        self.config = config or InboundConfig()
        self.limits = ParseLimits(max_bytes=self.config.max_bytes)

    def _is_bounce(self, local: str, domain: str, owned: bool) -> bool:
        base = self.config.bounce_local_part
        is_local = local == base or local.startswith(base + "+")
        return is_local and (owned or domain in self.config.bounce_domains)

    async def _is_verp(self, local: str, domain: str) -> bool:
        """A VERP address on a bounce subdomain naming a message we sent from that domain."""
        sub = self.config.return_path_subdomain
        email_id = verp_email_id(local)
        if not sub or email_id is None or not domain.startswith(f"{sub}."):
            return False
        sent = await self.outbound.by_id(email_id)
        return sent is not None and sent.domain in (None, domain.removeprefix(f"{sub}."))

    async def route(self, address: str) -> tuple[Route | None, str]:
        """The route of a recipient, or None and the SMTP reply refusing it."""
        parts = split_address(address)
        if parts is None:
            return None, "550 5.1.3 Bad recipient address syntax"
        local, domain = parts
        owner = await self.routing.owner(domain)
        if self._is_bounce(local, domain, owner is not None) or (
            owner is None and await self._is_verp(local, domain)
        ):
            return Route(f"{local}@{domain}", BOUNCE), "250 2.1.5 OK"
        if owner is None:
            return None, f"550 5.7.1 <{address[:100]}>: relay access denied, no mail accepted here"
        return Route(f"{local}@{domain}", owner), "250 2.1.5 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """Accept a recipient we serve (and remember whose it is), refuse the rest."""
        routes: _Routes = getattr(envelope, "bavlio_routes", None) or _Routes()
        envelope.bavlio_routes = routes
        refused: int = getattr(session, "bavlio_refused", 0)
        if refused >= self.config.max_refused_recipients:
            _close_soon(server)
            return "421 4.7.0 Too many refused recipients, closing connection"
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            route, reply = await self.route(address)
        except Exception:
            log.exception("inbound routing failed")
            return "451 4.3.0 Temporary failure, try again later"
        if route is None:
            session.bavlio_refused = refused + 1
            return reply
        routes.by_address[address] = route
        envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Store, parse and file the message; 250 only once it is stored."""
        routes: _Routes = getattr(envelope, "bavlio_routes", None) or _Routes()
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode("utf-8", "replace")
        targets = [routes.by_address[a] for a in envelope.rcpt_tos if a in routes.by_address]
        mail_from = str(envelope.mail_from or "")
        return await self.deliver("" if mail_from == "<>" else mail_from, targets, raw)

    async def deliver(self, mail_from: str, routes: list[Route], raw: bytes) -> str:
        """File one message for its recipients; the SMTP reply."""
        if len(raw) > self.config.max_bytes:
            return "552 5.3.4 Message too big"
        mail_from = mail_from.encode("utf-8", "replace").decode("utf-8")
        mail_from = "".join(c for c in mail_from if c > " " and c != "\x7f")
        try:
            parsed = parse_message(raw, self.limits)
        except InboundParseError as exc:
            return f"550 5.6.0 Message refused: {exc.code}"
        users: dict[str, list[str]] = {}
        bounce = False
        for route in routes:
            if route.user_id == BOUNCE:
                bounce = True
            else:
                users.setdefault(route.user_id, []).append(route.address)
        try:
            for user_id, addresses in users.items():
                await self._file(user_id, mail_from, addresses, raw, parsed)
            if bounce:
                await self._bounce(
                    mail_from, [r.address for r in routes if r.user_id == BOUNCE], raw, parsed
                )
        except Exception:
            log.exception("inbound delivery failed")
            return "451 4.3.0 Temporary failure, try again later"
        return "250 2.0.0 OK"

    async def _file(
        self,
        user_id: str,
        mail_from: str,
        rcpt_to: list[str],
        raw: bytes,
        parsed: ParsedMessage,
        kind: str = "message",
    ) -> str:
        """Raw bytes first, then the record (the raw file goes again if the record fails)."""
        inbound_id = new_id(INBOUND_PREFIX)
        key = f"inbound/{inbound_id}.eml"
        await self.raw.put(key, raw)
        try:
            if kind == "message":
                await self._link_sent(user_id, parsed)
            verdict = detect_auto_reply(parsed.headers)
            await self.store.add(
                user_id,
                inbound_id=inbound_id,
                parsed=parsed,
                kind=kind,
                mail_from=mail_from,
                rcpt_to=rcpt_to,
                raw_key=key,
                auto_reply=verdict.kind,
                thread=kind == "message",
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.raw.delete(key)
            raise
        return inbound_id

    async def _link_sent(self, user_id: str, parsed: ParsedMessage) -> None:
        """Thread a reply to a sent message the outbox did not link itself."""
        for candidate in candidate_ids(None, parsed.in_reply_to, parsed.references)[:20]:
            sent = await self.outbound.find(candidate)
            if sent is not None and sent.user_id == user_id:
                if await self.store.thread_of(user_id, candidate) is None:
                    await self.store.link_outbound(
                        user_id, sent_message_id=sent.id, message_id=candidate
                    )
                return

    async def _sent_for(self, ids: list[str]) -> SentMessage | None:
        for candidate in ids[:20]:
            sent = await self.outbound.find(candidate)
            if sent is not None:
                return sent
        return None

    async def _bounce(
        self, mail_from: str, rcpt_to: list[str], raw: bytes, parsed: ParsedMessage
    ) -> None:
        """A message to a bounce address: a DSN (recorded, hard bounces suppressed) or an
        automatic reply to the return path (filed for the sender of the original)."""
        try:
            report = parse_dsn(raw, self.limits)
        except NotADsn:
            ids = candidate_ids(None, parsed.in_reply_to, parsed.references)
            sent = await self._sent_for(ids)
            if sent is None:
                log.info("inbound: dropped a non-DSN message to a bounce address")
                return
            await self._file(sent.user_id, mail_from, rcpt_to, raw, parsed)
            return
        except InboundParseError:
            log.info("inbound: dropped a malformed report to a bounce address")
            return
        sent, how = await self._sent_of_report(rcpt_to, report)
        if sent is None:
            log.info("inbound: a DSN for no message of ours (%s)", report.original_message_id)
            return
        recipients = _reported_recipients(report, sent)
        if not recipients:
            log.info("inbound: a DSN (by %s) naming none of %s's recipients", how, sent.id)
            return
        inbound_id = await self._file(sent.user_id, mail_from, rcpt_to, raw, parsed, kind="dsn")
        await self.store.add_bounces(
            sent.user_id,
            inbound_id=inbound_id,
            sent_message_id=sent.id,
            recipients=recipients,
            now=time.time(),
        )
        for recipient in recipients:
            address = recipient.final_recipient or recipient.original_recipient
            if recipient.kind == "hard" and address:
                await self.suppression.add_hard_bounce(
                    sent.user_id, address, status=recipient.status, sent_message_id=sent.id
                )

    async def _sent_of_report(
        self, rcpt_to: list[str], report: DeliveryReport
    ) -> tuple[SentMessage | None, str]:
        """The sent message a DSN returns: by the VERP address it came to, the returned copy's
        Message-ID, or the relay's queue id (then only with a recipient of that message)."""
        for address in rcpt_to[:20]:
            parts = split_address(address)
            email_id = verp_email_id(parts[0]) if parts else None
            if email_id is not None:
                sent = await self.outbound.by_id(email_id)
                if sent is not None:
                    return sent, "return path"
        if report.original_message_id:
            sent = await self.outbound.find(report.original_message_id)
            if sent is not None:
                return sent, "message id"
        if report.queue_id:
            sent = await self.outbound.by_queue_id(report.queue_id)
            if sent is not None and sent.recipients is not None:
                return sent, "queue id"
        return None, ""


def _reported_recipients(report: DeliveryReport, sent: SentMessage) -> list[RecipientStatus]:
    """The report's recipients that ``sent`` really had (all, when its recipients are unknown):
    a forged report cannot mark, count or suppress anyone else."""
    if sent.recipients is None:
        return list(report.recipients)
    ours = set(sent.recipients)
    return [
        r
        for r in report.recipients
        if (r.final_recipient or "") in ours or (r.original_recipient or "") in ours
    ]


def _close_soon(server: Any) -> None:
    """Close the session's connection once the reply being written has gone."""
    transport = getattr(server, "transport", None)
    if transport is not None:
        asyncio.get_running_loop().call_soon(transport.close)


@dataclass
class _Sessions:
    limit: int
    per_peer_limit: int
    lifetime: float
    active: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)


class _BoundedSMTP(SMTP):
    """aiosmtpd's SMTP with caps on concurrent sessions (in all, and per client address) and
    on a session's lifetime."""

    def __init__(self, sessions: _Sessions, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions = sessions

    async def _handle_client(self) -> None:
        sessions = self._sessions
        peer = _peer_host(self.session.peer if self.session is not None else None)
        if (
            sessions.active >= sessions.limit
            or sessions.by_peer.get(peer, 0) >= sessions.per_peer_limit
        ):
            await self.push("421 4.7.0 Too many connections, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        sessions.active += 1
        sessions.by_peer[peer] = sessions.by_peer.get(peer, 0) + 1
        ends = self.loop.call_later(sessions.lifetime, self._session_too_long)
        try:
            await super()._handle_client()
        finally:
            ends.cancel()
            sessions.active -= 1
            left = sessions.by_peer.get(peer, 1) - 1
            if left > 0:
                sessions.by_peer[peer] = left
            else:
                sessions.by_peer.pop(peer, None)

    def _session_too_long(self) -> None:
        log.info(
            "inbound: %r session over its lifetime, closed", self.session and self.session.peer
        )
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(b"421 4.4.2 Session too long, closing connection\r\n")
        if transport is not None:
            transport.close()


def _peer_host(peer: Any) -> str:
    """The client address of a peername (``(host, port, ...)``), whatever its shape."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


@contextlib.asynccontextmanager
async def inbound_server(
    handler: InboundHandler, host: str, port: int
) -> AsyncIterator[asyncio.Server]:
    """Serve ``handler`` on ``host:port`` on the running loop until the context exits."""
    loop = asyncio.get_running_loop()
    config = handler.config

    sessions = _Sessions(
        config.max_sessions, config.max_sessions_per_peer, config.max_session_seconds
    )

    def factory() -> SMTP:
        return _BoundedSMTP(
            sessions,
            handler,
            hostname=config.hostname,
            data_size_limit=config.max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="bavlio inbound",
        )

    server = await loop.create_server(factory, host=host, port=port)
    try:
        yield server
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
