"""What inbound mail needs from the rest of BaviMail, as small interfaces (wired at start-up):
domain routing, the outbound message of a Message-ID, suppression, and a raw message store.
Simple implementations for tests and single-host deployments live here too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "InboundRouting",
    "LocalRawStore",
    "NoSuppression",
    "OutboundLookup",
    "RawStore",
    "RawStoreError",
    "SentMessage",
    "StaticRouting",
    "SuppressionSink",
]


class InboundRouting(Protocol):
    """Who receives mail for a domain."""

    async def owner(self, domain: str) -> str | None:
        """The user id owning ``domain`` (lower-case, no trailing dot) if it has inbound on."""
        ...


@dataclass(frozen=True)
class SentMessage:
    """A message we sent: its id in the outbox, its owner and, when the outbox knows them, its
    envelope recipients (a bounce is believed only for those)."""

    id: str
    user_id: str
    recipients: tuple[str, ...] | None = None
    domain: str | None = None
    """The sending domain, when the outbox knows it."""


class OutboundLookup(Protocol):
    """Our sent messages by Message-ID (without angle brackets)."""

    async def find(self, message_id: str) -> SentMessage | None:
        """The sent message with this Message-ID, if we sent one."""
        ...

    async def by_id(self, email_id: str) -> SentMessage | None:
        """The sent message with this outbox id (a VERP return path names it)."""
        ...

    async def by_queue_id(self, queue_id: str) -> SentMessage | None:
        """The sent message our relay queued under ``queue_id``."""
        ...


class SuppressionSink(Protocol):
    """Where hard-bounced addresses go so they are never sent to again."""

    async def add_hard_bounce(
        self, user_id: str, address: str, *, status: str | None, sent_message_id: str | None
    ) -> None:
        """Suppress ``address`` for ``user_id`` (idempotent)."""
        ...


class RawStore(Protocol):
    """Bytes by key (raw messages)."""

    async def put(self, key: str, data: bytes) -> None:
        """Store durably (the SMTP 250 follows)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The bytes, or None when absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove (absent is fine)."""
        ...


class RawStoreError(OSError):
    """A key the store refuses (path-like tricks) or an I/O failure."""


@dataclass(frozen=True)
class StaticRouting:
    """Routing from a fixed ``{domain: user_id}`` table (tests, single-tenant set-ups)."""

    domains: Mapping[str, str]

    async def owner(self, domain: str) -> str | None:
        """The table's owner of ``domain``."""
        return self.domains.get(domain.lower().rstrip("."))


class NoSuppression:
    """A sink that drops entries (until the suppression list is wired)."""

    async def add_hard_bounce(
        self, user_id: str, address: str, *, status: str | None, sent_message_id: str | None
    ) -> None:
        """Nothing to do."""


_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}){0,4}$")


class LocalRawStore:
    """Files under a directory: written to a temporary name, fsynced, then renamed, so a file
    that exists is whole. Keys are ``segment/segment...`` of safe characters only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key:
            raise RawStoreError(f"bad key {key[:80]!r}")
        return self.root / key

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` atomically."""
        await asyncio.to_thread(self._put, self._path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with tmp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    async def get(self, key: str) -> bytes | None:
        """The file's bytes, or None."""
        path = self._path(key)

        def read() -> bytes | None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> None:
        """Remove the file if present."""
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)
