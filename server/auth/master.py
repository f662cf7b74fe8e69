"""The server's master secret: the keyed hash of API keys and the HS256 session secret derive
from it unless set explicitly (``BAVLIO_KEY_SECRET`` / ``BAVLIO_JWT_SECRET``).

The embedded default keeps it in a file beside the SQLite database, created once with mode 0600;
several machines must share the secrets (set them, or share the file), or keys minted on one
machine fail on the others.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["derive", "load_or_create"]

_SIZE = 32


def load_or_create(path: Path) -> bytes:
    """The secret in ``path``, created atomically (O_EXCL, 0600) when absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: use its secret
            return load_or_create(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret.hex().encode())
        return secret
    text = raw.decode("ascii", "replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"secret file {path} is not hex") from None
    if len(secret) < 16:
        raise ValueError(f"secret file {path} holds fewer than 16 bytes")
    return secret


def derive(master: bytes, purpose: str) -> bytes:
    """A purpose-bound subkey (HMAC-SHA256 of the purpose), so one leak does not give the others."""
    return hmac.new(master, purpose.encode(), hashlib.sha256).digest()
