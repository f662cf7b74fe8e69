"""Standard Webhooks signatures (the svix scheme, through the ``standardwebhooks`` library):
HMAC-SHA256 over ``id.timestamp.body`` with the key of a ``whsec_`` secret, sent as
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``. Receivers verify
with stock ``standardwebhooks``/``svix`` code, whose 5-minute timestamp window bounds replays.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

__all__ = ["SECRET_PREFIX", "headers_for", "new_secret", "valid_secret"]

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def valid_secret(secret: str) -> bool:
    """Whether ``secret`` is ``whsec_`` and base64 of at least 16 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        return False
    return len(key) >= 16


def headers_for(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt of ``body`` (UTF-8 JSON) signed with ``secret``."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = Webhook(secret).sign(message_id, when, body.decode("utf-8"))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
