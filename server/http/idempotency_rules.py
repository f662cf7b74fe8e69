"""Idempotency-Key decisions (pure), after Stripe's: the first request with a key runs and its
response is stored for 24 hours; a retry with the same fingerprint (method, path, body) replays
it; the same key with another fingerprint is a 422; a retry while the first is running is a 409.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "KEY_PATTERN",
    "TTL_SECONDS",
    "Decision",
    "Stored",
    "decide",
    "fingerprint",
    "valid_key",
]

TTL_SECONDS = 24 * 3600
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
IN_FLIGHT_TIMEOUT = 300.0
"""A run that has not stored a response after this long is presumed dead; its key may run again."""


class Decision(StrEnum):
    """What to do with a request carrying an Idempotency-Key."""

    RUN = "run"
    REPLAY = "replay"
    IN_FLIGHT = "in_flight"
    MISMATCH = "mismatch"


@dataclass(frozen=True)
class Stored:
    """What the store holds for a key: its fingerprint, when it started, whether it finished."""

    fingerprint: str
    created_at: float
    finished: bool


def valid_key(key: str) -> bool:
    """Printable ASCII without spaces, 1 to 255 characters."""
    return bool(KEY_PATTERN.match(key))


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 over method, path and body (query strings are part of ``path``)."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def decide(stored: Stored | None, fp: str, now: float) -> Decision:
    """The decision for a request with fingerprint ``fp`` given what is stored for its key."""
    if stored is None or now - stored.created_at >= TTL_SECONDS:
        return Decision.RUN
    if stored.fingerprint != fp:
        return Decision.MISMATCH
    if stored.finished:
        return Decision.REPLAY
    if now - stored.created_at >= IN_FLIGHT_TIMEOUT:
        return Decision.RUN
    return Decision.IN_FLIGHT
