"""Customer webhook events of the mail platform and campaigns, raised inside the transaction that
stores the fact (the outbox outcome, the bounce, the inbound message, the open or click, the
domain check, the lead event): an event is queued exactly when its fact commits, and its id is
derived from the fact, so raising it again never delivers it twice.

Payloads (:func:`email_payload` and friends, pure) carry ids, addresses, subject, states and
codes - never a message body, a header dump, a DKIM key or a signing secret.

Campaigns: :func:`campaign_lead_event` is the one call the sequencer makes (in its own
transaction) when it records a ``replied`` or ``unsubscribed`` lead event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from server.mail.tracking import HUMAN
from server.webhooks.events import derived_event_id
from server.webhooks.store import queue_event

__all__ = [
    "BOUNCE_EVENT_KINDS",
    "bounce_events",
    "campaign_lead_event",
    "domain_check_event",
    "email_outcome_event",
    "email_payload",
    "inbound_event",
    "tracking_event",
]

BOUNCE_EVENT_KINDS: Final = frozenset({"hard", "soft", "policy"})
"""Bounce kinds raised as ``email.bounced`` (a ``none`` record is a success report)."""
_OUTCOMES: Final = {"sent": "email.sent", "failed": "email.failed"}
_LEAD_EVENTS: Final = {
    "replied": "campaign.lead_replied",
    "unsubscribed": "campaign.lead_unsubscribed",
}


def email_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """An outbox message as events show it (no raw bytes, no headers)."""
    recipients = row.get("recipients") or []
    return {
        "email_id": row["id"],
        "message_id": row.get("message_id"),
        "from": row.get("from_address"),
        "to": list(recipients)[:50],
        "subject": row.get("subject"),
        "state": row.get("state"),
        "relay_queue_id": row.get("relay_queue_id"),
        "error_code": row.get("error_code"),
        "suppressed": row.get("suppressed") or None,
    }


async def email_outcome_event(conn: AsyncConnection, row: Mapping[str, Any]) -> int:
    """``email.sent`` or ``email.failed`` for an outbox row that reached that state (others
    raise nothing); deliveries queued."""
    event_type = _OUTCOMES.get(str(row.get("state")))
    if event_type is None:
        return 0
    return await queue_event(
        conn,
        str(row["user_id"]),
        event_type,
        email_payload(row),
        event_id=derived_event_id(event_type, str(row["id"])),
    )


async def bounce_events(
    conn: AsyncConnection,
    user_id: str,
    *,
    inbound_id: str | None,
    sent_message_id: str | None,
    bounces: Sequence[Mapping[str, Any]],
) -> int:
    """``email.bounced`` per reported failing recipient of a DSN (hard, soft or policy)."""
    queued = 0
    for bounce in bounces:
        if bounce.get("kind") not in BOUNCE_EVENT_KINDS:
            continue
        recipient = str(bounce.get("recipient") or "")
        source = f"{inbound_id or sent_message_id}|{recipient}"
        queued += await queue_event(
            conn,
            user_id,
            "email.bounced",
            {
                "email_id": sent_message_id,
                "inbound_email_id": inbound_id,
                "recipient": recipient or None,
                "bounce_type": bounce.get("kind"),
                "status": bounce.get("status"),
            },
            event_id=derived_event_id("email.bounced", source),
        )
    return queued


async def inbound_event(conn: AsyncConnection, user_id: str, row: Mapping[str, Any]) -> int:
    """``email.received`` for a stored inbound message (ids, addresses, subject, sizes)."""
    attachments = row.get("attachments") or []
    return await queue_event(
        conn,
        user_id,
        "email.received",
        {
            "inbound_email_id": row["id"],
            "conversation_id": row.get("conversation_id"),
            "message_id": row.get("message_id"),
            "from": row.get("from_address"),
            "to": list(row.get("rcpt_to") or [])[:50],
            "subject": row.get("subject"),
            "size_bytes": row.get("size_bytes"),
            "attachments": len(attachments),
            "auto_reply": row.get("auto_reply"),
        },
        event_id=derived_event_id("email.received", str(row["id"])),
    )


async def tracking_event(
    conn: AsyncConnection,
    user_id: str,
    *,
    event_id: str,
    email_id: str,
    kind: str,
    actor: str,
    at: float,
    link_index: int | None = None,
    url: str | None = None,
) -> int:
    """``email.opened`` / ``email.clicked`` for one recorded tracking event, with its actor
    (a person, or the machine kind) and, for a click, the link."""
    event_type = "email.opened" if kind == "open" else "email.clicked"
    data: dict[str, Any] = {
        "email_id": email_id,
        "actor": actor,
        "by_person": actor in {a.value for a in HUMAN},
        "at": at,
    }
    if kind == "click":
        data.update(link_index=link_index, url=url)
    return await queue_event(
        conn,
        user_id,
        event_type,
        data,
        event_id=derived_event_id(event_type, event_id),
    )


async def domain_check_event(
    conn: AsyncConnection,
    user_id: str,
    *,
    domain_id: str,
    name: str,
    before: str,
    after: str,
    checks: Sequence[Mapping[str, Any]],
    at: float,
) -> int:
    """``domain.verified`` when a check makes the domain verified, ``domain.dns_failed`` when a
    verified domain's records stop checking out (the failing records named, no key material)."""
    if after == "verified" and before != "verified":
        event_type = "domain.verified"
    elif before == "verified" and after != "verified":
        event_type = "domain.dns_failed"
    else:
        return 0
    failing = [
        {
            "purpose": c.get("purpose"),
            "type": c.get("type"),
            "name": c.get("name"),
            "status": c.get("status"),
        }
        for c in checks
        if c.get("status") != "ok"
    ][:20]
    data: dict[str, Any] = {"domain_id": domain_id, "domain": name, "status": after}
    if event_type == "domain.dns_failed":
        data["failing_records"] = failing
    return await queue_event(
        conn,
        user_id,
        event_type,
        data,
        event_id=derived_event_id(event_type, f"{domain_id}|{at!r}"),
    )


async def campaign_lead_event(
    conn: AsyncConnection,
    user_id: str,
    *,
    kind: str,
    campaign_id: str,
    lead_id: str,
    email: str | None,
    email_id: str | None,
    event_row_id: str,
) -> int:
    """``campaign.lead_replied`` / ``campaign.lead_unsubscribed`` for a lead event the caller
    stores on ``conn`` (``event_row_id``: its ``campaign_events`` id, so a retried write raises
    it once). Other kinds raise nothing."""
    event_type = _LEAD_EVENTS.get(kind)
    if event_type is None:
        return 0
    return await queue_event(
        conn,
        user_id,
        event_type,
        {"campaign_id": campaign_id, "lead_id": lead_id, "email": email, "email_id": email_id},
        event_id=derived_event_id(event_type, event_row_id),
    )
