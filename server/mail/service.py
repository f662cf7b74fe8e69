"""Accepting a message for sending: the From address's identity, the daily caps, the build and
DKIM signature (at submission, so a retry sends the same bytes), suppression, the outbox row."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from server.ids import new_id
from server.mail.message import (
    Draft,
    Limits,
    MessageError,
    Sender,
    build_message,
    check_address,
)
from server.mail.outbox import MailRecord, Outbox
from server.mail.outbox_rules import CapReached, DailyCaps, State, utc_day_start
from server.mail.ports import (
    IdentityLookup,
    SuppressionCheck,
    no_identities,
    nothing_suppressed,
)
from server.mail.tracking import Rewritten, make_token, rewrite_html
from server.mail.verp import verp_address

__all__ = ["CapReached", "MailService", "Prepared"]


@dataclass(frozen=True)
class Tracking:
    """Open and click tracking for domains that turn it on: tokens signed with ``key``, served
    under ``base_url`` (the deployment's public address)."""

    base_url: str
    key: bytes

    def rewrite(
        self,
        email_id: str,
        html: str,
        unsubscribe: str | None,
        *,
        opens: bool = True,
        clicks: bool = True,
    ) -> Rewritten:
        """The HTML with tracked links and the pixel (the unsubscribe link left alone; no
        pixel without ``opens``, links as they are without ``clicks``)."""
        base = self.base_url.rstrip("/")
        return rewrite_html(
            html,
            lambda index: f"{base}/t/c/{make_token(self.key, 'c', email_id, index)}",
            f"{base}/t/o/{make_token(self.key, 'o', email_id)}.gif" if opens else None,
            skip=lambda url: url == unsubscribe or not clicks,
        )


@dataclass(frozen=True)
class Prepared:
    """A built, signed message as its outbox row, and its tracked links (by index)."""

    row: dict[str, Any]
    links: tuple[str, ...]


@dataclass
class MailService:
    """What the sending routes use; identity and suppression are injected (see ports)."""

    outbox: Outbox
    identity: IdentityLookup = no_identities
    suppression: SuppressionCheck = nothing_suppressed
    caps: DailyCaps = field(default_factory=DailyCaps)
    tracking: Tracking | None = None
    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], float] = time.time

    async def submit(
        self, user_id: str, draft: Draft, scheduled_at: float | None = None
    ) -> MailRecord:
        """Check, build, sign and queue one message (MessageError, SenderNotAllowed,
        CapReached); a message whose every recipient is suppressed is stored as failed."""
        prepared = await self.prepare(user_id, draft, scheduled_at)
        return await self.outbox.insert(prepared.row, prepared.links, caps=self.caps)

    async def prepare(
        self,
        user_id: str,
        draft: Draft,
        scheduled_at: float | None = None,
        *,
        track_opens: bool | None = None,
        track_clicks: bool | None = None,
        envelope_from: str | None = None,
    ) -> Prepared:
        """Everything :meth:`submit` does short of the insert: the outbox row and tracked
        links, for a caller that inserts them in its own transaction (campaigns). Tracking
        follows the domain's switch unless ``track_opens``/``track_clicks`` say otherwise;
        ``envelope_from`` (an address on the sending domain) replaces the From address as the
        return path, so delivery reports reach a bounce address."""
        from email.utils import parseaddr

        from_address = check_address(parseaddr(draft.from_)[1] or draft.from_, "from")
        identity = await self.identity(user_id, from_address)
        now = self.clock()
        domain = identity.domain.lower()
        if self.caps.per_domain or self.caps.per_alias:
            # An early refusal; the exact check is the insert's (Outbox.insert, under a lock).
            self.caps.check(
                *await self.outbox.counts_since(domain, from_address, utc_day_start(now))
            )
        email_id = new_id("email", now=now)
        links: tuple[str, ...] = ()
        opens = identity.tracking if track_opens is None else track_opens
        clicks = identity.tracking if track_clicks is None else track_clicks
        if self.tracking is not None and (opens or clicks) and draft.html:
            rewritten = self.tracking.rewrite(
                email_id, draft.html, draft.list_unsubscribe, opens=opens, clicks=clicks
            )
            draft, links = replace(draft, html=rewritten.html), rewritten.links
        sender = Sender(
            domain=domain,
            selector=identity.selector,
            private_key_pem=identity.private_key_pem,
            display_name=identity.alias_display_name,
            reply_to=identity.reply_to,
        )
        # VERP once the domain's return path checks out (each bounce names its message); else the
        # caller's own bounce address on the domain (campaigns), else the plain From.
        # getattr: identities written before the return path existed still send.
        return_path: str | None = getattr(identity, "return_path", None)
        if return_path:
            envelope_from = verp_address(email_id, return_path)
        elif envelope_from is not None:
            envelope_from = check_address(envelope_from, "envelope_from")
            if envelope_from.rpartition("@")[2] != domain:
                raise MessageError("envelope_from", f"must be an address on {domain}")
        built = build_message(
            draft, sender, email_id, envelope_from=envelope_from, limits=self.limits
        )
        suppressed = await self.suppression(user_id, built.recipients)
        remaining = [r for r in built.recipients if r not in suppressed]
        reasons = [{"address": a, "reason": r} for a, r in suppressed.items()] or None
        state = State.QUEUED if remaining else State.FAILED
        row = {
            "id": email_id,
            "user_id": user_id,
            "state": state.value,
            "from_address": built.from_address,
            "domain": domain,
            "envelope_from": built.envelope_from,
            "recipients": remaining or list(built.recipients),
            "headers_view": {
                "to": list(built.to),
                "cc": list(built.cc),
                "bcc": list(built.bcc),
                "tags": list(built.tags),
            },
            "subject": built.subject,
            "tags_key": "," + ",".join(t.lower() for t in built.tags) + ",",
            "message_id": built.message_id,
            "raw": built.raw,
            "size": len(built.raw),
            "scheduled_at": scheduled_at,
            "next_attempt_at": max(now, scheduled_at or now),
            "created_at": now,
            "updated_at": now,
            "handed_off_at": None,
            "finished_at": None if remaining else now,
            "lease_owner": None,
            "lease_expires": None,
            "attempt_token": None,
            "attempts": 0,
            "relay_queue_id": None,
            "relay_reply": None,
            "error_code": None if remaining else "all_recipients_suppressed",
            "error_message": None if remaining else "Every recipient is suppressed.",
            "suppressed": reasons,
        }
        return Prepared(row, links)
