"""DKIM private keys at rest: AES-256-GCM under a key derived from the master secret, bound to
the domain id and selector (a sealed key copied onto another row does not open)."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["PURPOSE", "SealError", "open_sealed", "seal"]

PURPOSE = "mail-dkim-keys"
"""The purpose the sealing key is derived for (``server.auth.master.derive``)."""
_VERSION = "v1"
_NONCE = 12


class SealError(Exception):
    """A sealed value does not open with this key (another secret, tampering, another row)."""


def _aesgcm(key: bytes) -> AESGCM:
    if len(key) < 32:
        raise ValueError("the sealing key must have at least 32 bytes")
    return AESGCM(key[:32])


def seal(key: bytes, plaintext: bytes, context: str) -> str:
    """``v1:<base64 nonce+ciphertext>``, authenticated with ``context``."""
    nonce = os.urandom(_NONCE)
    sealed = _aesgcm(key).encrypt(nonce, plaintext, context.encode())
    return f"{_VERSION}:{base64.b64encode(nonce + sealed).decode('ascii')}"


def open_sealed(key: bytes, text: str, context: str) -> bytes:
    """The plaintext of :func:`seal`'s output; SealError when it does not open."""
    version, _, body = text.partition(":")
    if version != _VERSION:
        raise SealError("unknown sealed format")
    try:
        raw = base64.b64decode(body, validate=True)
        return _aesgcm(key).decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
    except (ValueError, InvalidTag):
        raise SealError("the sealed value does not open with this key") from None
