"""The server's confirmed addresses as emailintel's pattern store, so the finder the find use
case runs reads the database's evidence before a find and records a confirmed find there
(``source="find"``): the next find at that domain, in any process, ranks that pattern first."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from emailintel.patternstore import PatternStoreError
from server.finder.known import KnownAddresses

__all__ = ["KnownPatternStore"]


class KnownPatternStore:
    """:class:`KnownAddresses` behind emailintel's ``PatternStore`` protocol."""

    def __init__(self, known: KnownAddresses) -> None:
        self._known = known

    async def known(self, domain: str) -> list[tuple[str, str]]:
        """The domain's confirmed (address, owner) pairs, newest first."""
        try:
            return await self._known.evidence(domain)
        except SQLAlchemyError as exc:
            raise PatternStoreError(f"known addresses unreadable: {type(exc).__name__}") from exc

    async def add(self, domain: str, address: str, name: str) -> None:
        """Record a confirmed find."""
        try:
            await self._known.confirm(address, domain, name, source="find")
        except SQLAlchemyError as exc:
            raise PatternStoreError(f"known addresses unwritable: {type(exc).__name__}") from exc
