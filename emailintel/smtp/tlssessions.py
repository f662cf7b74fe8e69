"""TLS session resumption for STARTTLS: the last session per (MX host, port), offered next time.

A resumed handshake skips the certificate exchange, which saves CPU on both sides. TLS 1.3 sends
its session tickets after the handshake, so a session is taken when the connection closes.
asyncio's ``start_tls`` takes no ``session=``; :meth:`TlsSessionCache.context_for` hands it a
context whose ``wrap_bio`` passes one (a session only resumes with the context that made it).
"""

from __future__ import annotations

import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from emailintel.errors import ConfigError

__all__ = ["DEFAULT_MAX_SESSIONS", "TlsSessionCache"]

DEFAULT_MAX_SESSIONS: Final = 4096
"""Sessions kept by default: one per (MX host, port), the least recently used dropped first."""

_Key = tuple[str, int]


class TlsSessionCache:
    """At most ``maxsize`` TLS sessions keyed by (MX host, port); expired ones are never offered."""

    def __init__(
        self, maxsize: int = DEFAULT_MAX_SESSIONS, *, clock: Callable[[], float] = time.time
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(f"TLS session cache size must be a positive integer: {maxsize!r}")
        self.maxsize = maxsize
        self._clock = clock
        self._entries: OrderedDict[_Key, tuple[ssl.SSLContext, ssl.SSLSession]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, host: str, port: int, context: ssl.SSLContext) -> ssl.SSLSession | None:
        """The live session for ``host:port`` made with ``context``, if there is one."""
        key = (host.lower(), port)
        entry = self._entries.get(key)
        if entry is None:
            return None
        made_with, session = entry
        if session.time + session.timeout <= self._clock():
            del self._entries[key]
            return None
        if made_with is not context:
            return None
        self._entries.move_to_end(key)
        return session

    def put(
        self, host: str, port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
    ) -> None:
        """Remember ``session`` for ``host:port`` (None or a session without a ticket or id: no-op)."""
        if session is None or not (session.has_ticket or session.id):
            return
        key = (host.lower(), port)
        self._entries[key] = (context, session)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def discard(self, host: str, port: int) -> None:
        """Forget the session for ``host:port`` (after a handshake that failed with it)."""
        self._entries.pop((host.lower(), port), None)

    def context_for(self, host: str, port: int, context: ssl.SSLContext) -> ssl.SSLContext:
        """``context`` itself, or one that resumes the cached session for ``host:port``."""
        session = self.get(host, port, context)
        if session is None:
            return context
        return _ResumingContext(context, session)


class _ResumingContext(ssl.SSLContext):
    """Delegates ``wrap_bio`` to the real context with ``session=``; all asyncio calls on it."""

    _base: ssl.SSLContext
    _session: ssl.SSLSession

    def __new__(cls, base: ssl.SSLContext, session: ssl.SSLSession) -> _ResumingContext:
        self = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        self._base = base
        self._session = session
        return self

    def __init__(self, base: ssl.SSLContext, session: ssl.SSLSession) -> None:
        pass  # everything is set in __new__ (ssl.SSLContext has no __init__ of its own)

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self._base.wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session or self._session,
        )
