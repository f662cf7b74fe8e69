"""The event types a webhook endpoint can subscribe to (an empty subscription takes them all),
and which part of the server raises each."""

from __future__ import annotations

from typing import Final

__all__ = ["EVENT_TYPES", "TEST_EVENT"]

TEST_EVENT: Final = "webhook.test"

EVENT_TYPES: Final[dict[str, str]] = {
    "job.succeeded": "A job (find, verify, bulk, dataset verification, lead batch) succeeded.",
    "job.failed": "A job failed; its reservation was released.",
    "job.cancelled": "A job was cancelled; unused credits returned.",
    "email.sent": "An outbound email was handed to the relay.",
    "email.failed": "An outbound email could not be sent.",
    "email.bounced": "A delivery status notification reported a bounce.",
    "email.opened": "A tracked email was opened by a person (machine opens are flagged).",
    "email.clicked": "A tracked link was clicked.",
    "email.received": "An inbound email arrived for a domain with inbound on.",
    "domain.verified": "A sending domain's DNS records all checked out.",
    "domain.dns_failed": "A sending domain's DNS records stopped checking out.",
    TEST_EVENT: "A test event sent on request (POST /api/v1/webhooks/{id}/test).",
}
"""Event type → when it is raised."""
