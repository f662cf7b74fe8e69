"""The event types a webhook endpoint can subscribe to (an empty subscription takes them all),
and which part of the server raises each."""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["EVENT_TYPES", "TEST_EVENT", "derived_event_id"]

TEST_EVENT: Final = "webhook.test"

EVENT_TYPES: Final[dict[str, str]] = {
    "job.succeeded": "A job (find, verify, bulk, dataset verification, lead batch) succeeded.",
    "job.failed": "A job failed; its reservation was released.",
    "job.cancelled": "A job was cancelled; unused credits returned.",
    "email.sent": "An outbound email was handed to the relay.",
    "email.failed": "An outbound email could not be sent.",
    "email.bounced": "A delivery status notification reported a bounce.",
    "email.opened": "A tracked email was opened (``actor``: a person, or a machine such as "
    "Apple Mail Privacy Protection or a scanner; ``by_person`` says which).",
    "email.clicked": "A tracked link was clicked (``actor`` and ``by_person`` as for opens).",
    "email.received": "An inbound email arrived for a domain with inbound on.",
    "domain.verified": "A sending domain's DNS records all checked out.",
    "domain.dns_failed": "A sending domain's DNS records stopped checking out.",
    "campaign.lead_replied": "A campaign lead replied (the sequence stops for the lead).",
    "campaign.lead_unsubscribed": "A campaign lead unsubscribed.",
    TEST_EVENT: "A test event sent on request (POST /api/v1/webhooks/{id}/test).",
}
"""Event type → when it is raised."""

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def derived_event_id(event_type: str, source: str) -> str:
    """A stable event id (``evt_`` and 26 characters) for the event ``event_type`` of the
    stored fact ``source`` (e.g. an email id): raising it again never delivers it twice."""
    number = int.from_bytes(hashlib.sha256(f"{event_type}|{source}".encode()).digest()[:17])
    number >>= 6  # 130 bits: 26 characters of 5 bits
    chars = []
    for _ in range(26):
        number, rest = divmod(number, 32)
        chars.append(_CROCKFORD[rest])
    return "evt_" + "".join(reversed(chars))
