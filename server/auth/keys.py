"""API key format, checksum and storage hash (pure).

Format: ``bav_live_`` + 32 base62 characters of randomness (~190 bits) + 6 base62 characters of
checksum (CRC32 of the prefix and the random part), 47 characters in all; the regular expression
``bav_live_[0-9A-Za-z]{38}`` matches every key, so secret scanners can find leaked ones. A key whose
checksum does not match is refused before any database read. Keys are stored as
HMAC-SHA256(server secret, key) beside a display prefix (the first 12 characters and the last 4).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

__all__ = [
    "KEY_PATTERN",
    "KEY_PREFIX",
    "display_prefix",
    "generate_key",
    "key_hash",
    "looks_valid",
]

KEY_PREFIX = "bav_live_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_LENGTH = 32
_CHECK_LENGTH = 6
KEY_LENGTH = len(KEY_PREFIX) + _RANDOM_LENGTH + _CHECK_LENGTH
KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}[0-9A-Za-z]{{{_RANDOM_LENGTH + _CHECK_LENGTH}}}$")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LENGTH)


def generate_key() -> str:
    """A fresh random key with its checksum."""
    body = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return body + _checksum(body)


def looks_valid(key: str) -> bool:
    """True when ``key`` has the format and a matching checksum (no database needed)."""
    if len(key) != KEY_LENGTH or not KEY_PATTERN.match(key):
        return False
    return hmac.compare_digest(key[-_CHECK_LENGTH:], _checksum(key[:-_CHECK_LENGTH]))


def key_hash(key: str, secret: bytes) -> str:
    """The stored form: hex HMAC-SHA256 of the key under the server's key secret."""
    return hmac.new(secret, key.encode("ascii"), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    """What lists show: ``bav_live_AbC…wxyz`` (enough to recognise, useless to use)."""
    return f"{key[: len(KEY_PREFIX) + 4]}…{key[-4:]}"
