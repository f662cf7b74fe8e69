"""Cached SMTP verdicts: the last verification of each address, answered again free within
``BAVLIO_VERIFY_CACHE_SECONDS`` (the seed's "checks cache first (free)")."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models import Verdict
from server.db.tx import read_connection, write_transaction

__all__ = ["CachedVerdict", "VerdictCache"]


@dataclass(frozen=True)
class CachedVerdict:
    """A stored verification result and when it was made."""

    result: dict[str, Any]
    verified_at: float


class VerdictCache:
    """Verdicts by normalised address (lower-cased), newest wins."""

    def __init__(self, engine: AsyncEngine, ttl: float) -> None:
        self.engine = engine
        self.ttl = ttl

    async def get(self, email: str) -> CachedVerdict | None:
        """The verdict of ``email`` if verified within the TTL."""
        if self.ttl <= 0:
            return None
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(Verdict.result, Verdict.verified_at).where(
                        Verdict.email == email.lower(),
                        Verdict.verified_at >= time.time() - self.ttl,
                    )
                )
            ).first()
        if row is None:
            return None
        return CachedVerdict(json.loads(row.result), row.verified_at)

    async def put(self, email: str, result: dict[str, Any]) -> None:
        """Store the verdict of ``email`` (replacing an older one)."""
        values = {"result": json.dumps(result), "verified_at": time.time()}
        key = email.lower()
        try:
            async with write_transaction(self.engine) as conn:
                done = await conn.execute(
                    update(Verdict).where(Verdict.email == key).values(**values)
                )
                if done.rowcount == 0:
                    await conn.execute(insert(Verdict).values(email=key, **values))
        except IntegrityError:  # stored concurrently: that one stands
            return

    async def prune(self) -> int:
        """Delete verdicts past the TTL; how many went."""
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                delete(Verdict).where(Verdict.verified_at < time.time() - self.ttl)
            )
        return result.rowcount or 0
