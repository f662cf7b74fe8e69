"""The Idempotency-Key store: claim a key, then keep the response for replays (the rules are in
:mod:`server.http.idempotency_rules`).

A claim is one INSERT (the primary key (user, key) makes concurrent claims race safely); an
expired or abandoned claim is taken over by a conditional UPDATE on its old ``created_at``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models import IdempotencyKey
from server.db.tx import read_connection, write_transaction
from server.http.idempotency_rules import TTL_SECONDS, Decision, Stored, decide

__all__ = ["MAX_STORED_BODY", "Claim", "IdempotencyStore"]

MAX_STORED_BODY = 1 << 20
"""A response larger than this is not kept (its key is released: a retry runs again)."""


@dataclass(frozen=True)
class Claim:
    """The outcome of presenting a key: a decision and, for a replay, the stored response."""

    decision: Decision
    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None


class IdempotencyStore:
    """Idempotency keys per user, kept :data:`TTL_SECONDS`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def claim(self, user_id: str, key: str, fp: str) -> Claim:
        """Claim ``key`` for a request with fingerprint ``fp``, or say why not."""
        for _ in range(3):
            now = time.time()
            async with read_connection(self.engine) as conn:
                row = (
                    await conn.execute(
                        select(IdempotencyKey).where(
                            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
                        )
                    )
                ).first()
            stored = Stored(row.fingerprint, row.created_at, row.finished) if row else None
            decision = decide(stored, fp, now)
            if decision is Decision.REPLAY:
                assert row is not None
                return Claim(decision, row.status, json.loads(row.headers or "{}"), row.body)
            if decision is not Decision.RUN:
                return Claim(decision)
            try:
                async with write_transaction(self.engine) as conn:
                    if row is None:
                        await conn.execute(
                            insert(IdempotencyKey).values(
                                user_id=user_id,
                                key=key,
                                fingerprint=fp,
                                created_at=now,
                                finished=False,
                            )
                        )
                        return Claim(Decision.RUN)
                    taken = await conn.execute(
                        update(IdempotencyKey)
                        .where(
                            IdempotencyKey.user_id == user_id,
                            IdempotencyKey.key == key,
                            IdempotencyKey.created_at == row.created_at,
                        )
                        .values(
                            fingerprint=fp,
                            created_at=now,
                            finished=False,
                            status=None,
                            headers=None,
                            body=None,
                        )
                    )
                    if taken.rowcount == 1:
                        return Claim(Decision.RUN)
            except IntegrityError:
                pass  # another request claimed it first: decide again on what it stored
        return Claim(Decision.IN_FLIGHT)

    async def finish(
        self, user_id: str, key: str, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        """Keep the response of a claimed key (or release it when too large to keep)."""
        if len(body) > MAX_STORED_BODY:
            await self.release(user_id, key)
            return
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
                .values(finished=True, status=status, headers=json.dumps(headers), body=body)
            )

    async def release(self, user_id: str, key: str) -> None:
        """Forget a claim whose request did not complete (a retry runs it again)."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.user_id == user_id,
                    IdempotencyKey.key == key,
                    IdempotencyKey.finished.is_(False),
                )
            )

    async def prune(self, now: float | None = None) -> int:
        """Delete keys older than the TTL; how many went."""
        cutoff = (time.time() if now is None else now) - TTL_SECONDS
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)
            )
        return result.rowcount or 0
