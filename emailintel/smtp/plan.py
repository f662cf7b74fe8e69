"""The prober's decisions, pure: what to send next, when to reconnect, what a reply means.

The engine (:mod:`emailintel.smtp._engine`) does the I/O and asks these functions everything
else: how many RCPTs the next batch may carry within the server's error budget, when another
connection to an MX pays off, what one RCPT reply does to the domain and the connection, when the
catch-all probe may run and what its replies say, and the facts a session failure leaves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from emailintel.models import SmtpFacts, SmtpReply
from emailintel.smtp.proxies import SmtpProxyError
from emailintel.smtp.replies import ReplyClass, ReplyKind, classify_reply
from emailintel.smtp.session import (
    SmtpConnectError,
    SmtpDisconnectedError,
    SmtpProtocolError,
    SmtpSessionError,
    SmtpTimeoutError,
    SmtpTLSError,
)

__all__ = [
    "FREE_RSETS",
    "PARALLEL_FROM",
    "Limits",
    "ReplyStep",
    "batch_size",
    "catch_all_due",
    "catch_all_verdict",
    "connection_carry",
    "connections_wanted",
    "deadline",
    "facts_from_reply",
    "failure_facts",
    "gave_up",
    "handshake_round_trips",
    "on_open_failure",
    "on_refusal",
    "read_rcpt_reply",
    "rset_costs_error",
    "stalled",
    "worth_a_batch",
]

FREE_RSETS: Final = 4
"""RSETs per connection that stay under a strict junk-command limit (Postfix counts a 5th)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may spend, and how often a domain may reconnect."""

    max_rejections: int = 8  # refused RCPTs per connection (under Postfix's error limits)
    max_rcpt: int = 50  # RCPTs per connection (the prober's and the provider's limit)
    max_reconnects: int = 3


def batch_size(
    limits: Limits, *, rejections: int, sent: int, pipelining: bool, one_at_a_time: bool
) -> int:
    """RCPTs the next write may carry (0: reconnect first).

    Every RCPT of a batch may be refused, so a batch never crosses the error budget; without
    PIPELINING, after a temporary refusal, or when nothing may follow an acceptance, one.
    """
    room = min(limits.max_rejections - rejections, limits.max_rcpt - sent)
    if room <= 0:
        return 0
    return room if pipelining and not one_at_a_time else 1


def handshake_round_trips(tls: bool | None) -> int:
    """Round trips a new connection costs before its first RCPT: connect and greeting, EHLO;
    with TLS also STARTTLS, the TLS handshake and EHLO again."""
    return 5 if tls else 2


def worth_a_batch(room: int, *, full: int, handshake: int, pending: int) -> bool:
    """Whether a batch of ``room`` RCPTs is worth its round trip on this connection.

    A fresh connection costs ``handshake`` round trips and then carries a ``full`` batch, so a
    batch smaller than ``full / (handshake + 1)`` is cheaper to carry over a new connection;
    unless the queue holds no more than ``room`` (a new connection would carry no more).
    """
    if room <= 0:
        return False
    return pending <= room or room * (handshake + 1) >= full


def rset_costs_error(rsets_before: int) -> bool:
    """Whether the next RSET on a connection counts as an error (past the free ones)."""
    return rsets_before + 1 > FREE_RSETS


PARALLEL_FROM: Final = 0.010
"""Seconds an MX's round trip must take before a second connection to it pays off: below, one
connection is never waiting long, and more only add handshakes and load (loopback, a LAN)."""


def connections_wanted(
    pending: int,
    open_: int,
    per_connection: int,
    limit: int,
    *,
    round_trip: float | None = None,
    parallel_from: float = PARALLEL_FROM,
) -> int:
    """How many more connections to an MX to open now (0: the open ones will carry it).

    Another connection pays off only while the queue holds more RCPTs than the open ones carry
    before they must reconnect, and only once the MX's round trip (None: not measured yet) is
    long enough that connections mostly wait; never more than ``limit`` (politeness, provider).
    """
    if round_trip is None or round_trip < parallel_from:
        limit = min(limit, 1)
    if pending <= 0 or open_ >= limit:
        return 0
    needed = math.ceil(pending / max(1, per_connection))
    return max(0, min(needed, limit) - open_)


def connection_carry(limits: Limits, *, rejected: int, sent: int) -> int:
    """RCPTs a fresh connection to an MX is expected to carry before it must reconnect.

    Its error budget over the share of RCPTs this MX refused so far (a prior of one in two
    before any reply), never more than the recipient limit, at least one batch.
    """
    rate = (rejected + 1) / (sent + 2)
    budget = min(limits.max_rejections, limits.max_rcpt)
    return max(budget, min(limits.max_rcpt, math.floor(limits.max_rejections / rate)))


def deadline(address_deadline: float, command_timeout: float, count: int) -> float:
    """Seconds a domain's probe of ``count`` addresses may take in all."""
    return address_deadline + command_timeout * max(0, count - 1)


def facts_from_reply(
    reply: SmtpReply, klass: ReplyClass, *, mx_host: str | None, tls: bool | None
) -> SmtpFacts:
    """The mailbox facts one classified reply establishes."""
    kind = klass.kind
    values: dict[str, Any] = {"checked": True, "mx_host": mx_host, "reply": reply, "tls": tls}
    if kind is ReplyKind.ACCEPTED:
        values["accepted"] = True
    elif kind is ReplyKind.MAILBOX_NOT_FOUND:
        values.update(accepted=False, mailbox_not_found=True)
    elif kind is ReplyKind.MAILBOX_FULL:
        values.update(accepted=False, mailbox_full=True)
    elif kind is ReplyKind.MAILBOX_DISABLED:
        values.update(accepted=False, mailbox_disabled=True)
    elif kind is ReplyKind.BLOCKED:
        values["blocked"] = True
    elif kind is ReplyKind.GREYLISTED:
        values.update(greylisted=True, retry_after=klass.retry_after)
    elif kind in (ReplyKind.TEMP_FAILURE, ReplyKind.TOO_MANY_RECIPIENTS):
        values.update(temp_failure=True, retry_after=klass.retry_after)
    elif kind is ReplyKind.REJECTED:
        values["accepted"] = False
    else:
        values["protocol_error"] = True
    return SmtpFacts(**values)


def failure_facts(exc: BaseException, mx_host: str | None) -> SmtpFacts:
    """Facts for a session failure that left no reply to classify."""
    flag = "protocol_error"
    if isinstance(exc, SmtpProxyError):
        flag = "proxy_error"
    elif isinstance(exc, SmtpTimeoutError | TimeoutError):
        flag = "timed_out"
    elif isinstance(exc, SmtpTLSError):
        flag = "tls_error"
    elif isinstance(exc, SmtpConnectError):
        flag = "connect_failed"
    elif isinstance(exc, SmtpDisconnectedError):
        flag = "connect_failed" if exc.stage in ("connect", "banner") else "temp_failure"
    elif isinstance(exc, SmtpProtocolError):
        flag = "protocol_error"
    stage = exc.stage if isinstance(exc, SmtpSessionError) else "connect"
    reply = SmtpReply(stage=stage, code=None, message=str(exc))
    return SmtpFacts(checked=True, mx_host=mx_host, reply=reply, **{flag: True})


def gave_up(mx_host: str) -> SmtpFacts:
    """Facts for a domain that used up its reconnects without an answer."""
    return SmtpFacts(checked=True, mx_host=mx_host, temp_failure=True, reply=None)


OpenStep = Literal["fewer", "next_mx", "give_up"]


def on_open_failure(exc: SmtpSessionError | SmtpProxyError, *, others_open: int = 0) -> OpenStep:
    """After a connection could not be opened: fewer connections, the next MX, or give up.

    While other connections to this MX are open (or opening), an extra one that fails says "no
    more than those" (a per-client connection limit): they carry on and no answer changes. Otherwise
    a proxy or TLS failure is ours (every MX would fail the same way) and anything else is the
    MX's, so the next one may take us.
    """
    if others_open > 0:
        return "fewer"
    return "give_up" if isinstance(exc, SmtpProxyError | SmtpTLSError) else "next_mx"


RefusalStep = Literal["fewer", "next_mx", "reconnect", "give_up"]


def on_refusal(
    reply: SmtpReply, *, reconnects: int, max_reconnects: int, others_open: int = 0
) -> RefusalStep:
    """After the server refused the session (banner, EHLO, STARTTLS) or our MAIL FROM.

    A 4xx banner while other connections are open says "no more connections" (fewer); else it
    sends us to the next MX. A 421 later is worth a reconnect while reconnects last; anything
    else refuses us, and the domain's addresses get its facts.
    """
    temporary = reply.code is None or reply.code < 500
    if reply.stage == "banner":
        if temporary and others_open > 0:
            return "fewer"
        return "next_mx" if temporary else "give_up"
    if reply.code == 421 and reconnects < max_reconnects:
        return "reconnect"
    return "give_up"


@dataclass(frozen=True, slots=True)
class ReplyStep:
    """What one RCPT reply does.

    ``facts`` None: the address is not answered yet (it goes back to its domain's queue) and the
    connection ends. Otherwise the facts are the address's answer, and the flags say what
    follows: ``reconnect`` the connection ends after this batch, ``count_reconnect`` it counts
    against the domain's reconnects, ``rejection`` it counts against the connection's error
    budget, ``backoff`` the MX is left alone for a while, ``stop_domain`` the rest of the domain
    gets these facts (the server refuses us, not the mailbox), ``one_at_a_time`` stop
    pipelining on this connection, ``not_catch_all`` the domain rejects unknown mailboxes here.
    """

    facts: SmtpFacts | None
    reconnect: bool = False
    count_reconnect: bool = False
    rejection: bool = False
    backoff: bool = False
    stop_domain: bool = False
    one_at_a_time: bool = False
    not_catch_all: bool = False


def read_rcpt_reply(
    reply: SmtpReply,
    *,
    mx_host: str,
    tls: bool | None,
    tx_sent: int,
    connected: bool,
    reconnects: int,
    max_reconnects: int,
) -> ReplyStep:
    """What an RCPT reply means for the address, its domain and the connection.

    ``tx_sent`` counts this transaction's RCPTs up to this one: ``452 too many recipients`` on
    the first is an answer (a temporary failure), later it means "reconnect and go on". A 421
    (or a reply after which the server hung up) costs one of the domain's reconnects; once they
    are used up the reply is the answer.
    """
    klass = classify_reply(reply)
    wants_reconnect = klass.kind is ReplyKind.TOO_MANY_RECIPIENTS or reply.code == 421
    count = reply.code == 421 or (wants_reconnect and not connected)
    if wants_reconnect and (tx_sent > 1 or reply.code == 421):
        used = reconnects + (1 if count else 0)
        if used <= max_reconnects:
            return ReplyStep(None, reconnect=True, count_reconnect=count, backoff=klass.backoff)
    facts = facts_from_reply(reply, klass, mx_host=mx_host, tls=tls)
    temporary = reply.code is not None and 400 <= reply.code < 500
    return ReplyStep(
        facts,
        count_reconnect=count,
        rejection=facts.accepted is not True,
        backoff=klass.backoff,
        stop_domain=klass.kind is ReplyKind.BLOCKED,
        one_at_a_time=facts.accepted is not True and temporary,
        not_catch_all=facts.mailbox_not_found is True,
    )


def stalled(*, answered: int, reconnects_grew: bool) -> bool:
    """Whether a connection that carried a domain's RCPTs made no progress for it.

    Such a connection counts as a reconnect (unless one was already counted), so a server that
    never answers usefully cannot keep a domain reconnecting forever.
    """
    return answered == 0 and not reconnects_grew


def catch_all_due(
    *, cached: bool | None, skip: bool, accepted_here: bool, real_done: bool, probed: bool
) -> bool:
    """Whether a domain's catch-all probe may run now at this MX.

    Only after a real recipient was accepted there and all of the domain's real RCPTs are
    answered (nothing real follows a random address), once, and not when the verdict is cached
    or the provider's rule says a random probe proves nothing.
    """
    return accepted_here and real_done and not probed and cached is None and not skip


def catch_all_verdict(kinds: Sequence[ReplyKind | None]) -> bool | None:
    """The catch-all verdict of the random probes' replies (None: inconclusive).

    ``None`` in ``kinds`` is a probe cut off without a reply.
    """
    if ReplyKind.ACCEPTED in kinds:
        return True
    if kinds and all(kind is ReplyKind.MAILBOX_NOT_FOUND for kind in kinds):
        return False
    return None
