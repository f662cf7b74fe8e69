"""Resource ids: a type prefix and 26 Crockford base32 characters (48-bit milliseconds, 80 random
bits), so ids sort by creation time and a cursor can be the last id seen (``key_01J…``)."""

from __future__ import annotations

import re
import secrets
import time

__all__ = ["ID_PATTERN", "is_id", "new_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_PATTERN = re.compile(r"^[a-z]{2,8}_[0-9A-HJKMNP-TV-Z]{26}$")


def new_id(prefix: str, *, now: float | None = None) -> str:
    """A fresh id such as ``key_01JF…``; ``now`` (seconds) fixes the time part in tests."""
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    number = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        number, rest = divmod(number, 32)
        chars.append(_CROCKFORD[rest])
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` is a well-formed id of type ``prefix`` (checked before any query)."""
    return value.startswith(prefix + "_") and bool(ID_PATTERN.match(value))
