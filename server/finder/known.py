"""Confirmed addresses in the database, and per-domain pattern shares inferred from them with
emailintel's Dirichlet posterior (``infer_patterns``), so one confirmed ``{last}.{first}`` moves
the next find at that domain to that pattern first, in any process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from emailintel.patterns import PatternDistribution, infer_patterns, prior_distribution
from server.db.models import KnownAddress
from server.db.tx import read_connection, write_transaction

__all__ = ["MAX_EVIDENCE", "KnownAddresses", "KnownStats"]

MAX_EVIDENCE = 500
"""The most recent confirmed addresses per domain that inference reads."""


@dataclass(frozen=True)
class KnownStats:
    """How much the finder has learned."""

    addresses: int
    domains: int


class KnownAddresses:
    """Record confirmed (address, owner) pairs; read them back per domain."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def confirm(self, email: str, domain: str, owner_name: str, *, source: str) -> None:
        """Remember that ``email`` belongs to ``owner_name`` (latest confirmation wins)."""
        now = time.time()
        values = {"owner_name": owner_name[:200], "source": source, "confirmed_at": now}
        try:
            async with write_transaction(self.engine) as conn:
                done = await conn.execute(
                    update(KnownAddress).where(KnownAddress.email == email).values(**values)
                )
                if done.rowcount == 0:
                    await conn.execute(
                        insert(KnownAddress).values(email=email, domain=domain, **values)
                    )
        except IntegrityError:  # confirmed concurrently: the other write stands
            return

    async def evidence(self, domain: str) -> list[tuple[str, str]]:
        """(address, owner) pairs at ``domain``, newest first, at most :data:`MAX_EVIDENCE`."""
        async with read_connection(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(KnownAddress.email, KnownAddress.owner_name)
                    .where(KnownAddress.domain == domain)
                    .order_by(KnownAddress.confirmed_at.desc())
                    .limit(MAX_EVIDENCE)
                )
            ).all()
        return [(row.email, row.owner_name) for row in rows]

    async def owner_address(self, domain: str, owner_name: str) -> str | None:
        """A confirmed address of ``owner_name`` at ``domain`` (case-insensitive name match)."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(KnownAddress.email)
                    .where(
                        KnownAddress.domain == domain,
                        func.lower(KnownAddress.owner_name) == owner_name.lower(),
                    )
                    .order_by(KnownAddress.confirmed_at.desc())
                    .limit(1)
                )
            ).first()
        return row.email if row else None

    async def distribution(self, domain: str) -> PatternDistribution:
        """The domain's pattern shares: the priors moved by what was confirmed there."""
        known = await self.evidence(domain)
        if not known:
            return prior_distribution()
        return infer_patterns(known, domain=domain)

    async def stats(self) -> KnownStats:
        """Counts of confirmed addresses and of domains with any."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(
                        func.count(KnownAddress.email),
                        func.count(func.distinct(KnownAddress.domain)),
                    )
                )
            ).one()
        return KnownStats(addresses=int(row[0]), domains=int(row[1]))
