"""The SQL store: SQLite or PostgreSQL through SQLAlchemy's async engine for reads and
migrations, and a writer of its own (:mod:`x402gw.ledger._sqlite`, :mod:`x402gw.ledger._postgres`)
for the one-statement writes of the paid path.

Driver and engine failures come out as :class:`~x402gw.ledger.LedgerUnavailable`, a refused
unique key as :class:`~x402gw.ledger.store.UniqueViolation`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from x402gw.ledger import _statements as sql
from x402gw.ledger._plans import Statement, Writer
from x402gw.ledger._sqlite import SqliteWriter
from x402gw.ledger.records import LedgerUnavailable, PaymentRecord, record_from_row
from x402gw.ledger.rules import State
from x402gw.ledger.store import Store, UniqueViolation

_MIGRATE_ATTEMPTS = 5


def _unavailable(exc: BaseException) -> LedgerUnavailable:
    return LedgerUnavailable(f"ledger database error: {exc}")


class SqlStore(Store):
    """Records in SQLite (a file) or PostgreSQL (``schema``: a schema of their own)."""

    def __init__(self, url: str | Path, schema: str | None = None) -> None:
        self.engine: AsyncEngine = sql.create_engine(url, schema)
        self.name = self.engine.dialect.name
        self._writer: Writer
        if self.name == "sqlite":
            self._writer = SqliteWriter(self.engine.url.database or "")
        else:
            from x402gw.ledger._postgres import PgWriter  # asyncpg is the postgres extra

            self._writer = PgWriter(self.engine.url, schema)
        self._schema = schema

    async def close(self) -> None:
        """Dispose of the connection pool and the writer's connection (or pool)."""
        await self._writer.close()
        await self.engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (sa.exc.DBAPIError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def _write(self, statement: Statement, params: Mapping[str, Any]) -> PaymentRecord | None:
        """Run one INSERT/UPDATE ... RETURNING on the writer (one driver call in autocommit:
        one statement is atomic); the record, or None when it matched nothing."""
        try:
            row = await self._writer.fetch_one(statement, params)
        except sa.exc.IntegrityError as exc:
            raise UniqueViolation(str(exc.orig)) from exc
        except (sa.exc.DBAPIError, OSError) as exc:
            raise _unavailable(exc) from exc
        return None if row is None else record_from_row(row)

    async def migrate(self) -> str | None:
        """Apply pending migrations; return the revision now in place.

        On SQLite, processes starting together on a new file can still meet a "database is
        locked" that the busy timeout does not cover (while another one switches the file to
        WAL): the migration is then tried again, a few times, since it is idempotent.
        """
        for attempt in range(_MIGRATE_ATTEMPTS):
            try:
                async with self._tx() as conn:
                    await conn.run_sync(sql.upgrade_to_head, self._schema)
                async with self._tx() as conn:
                    return await conn.run_sync(sql.current_revision)
            except LedgerUnavailable as exc:
                retry = self.name == "sqlite" and "database is locked" in str(exc)
                if not retry or attempt == _MIGRATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def get(self, record_id: str) -> PaymentRecord | None:
        async with self._tx() as conn:
            row = await sql.select_by_id(conn, record_id)
        return None if row is None else record_from_row(row._mapping)

    async def live_by_authorization(
        self, network: str, asset: str, payer: str, nonce: str
    ) -> PaymentRecord | None:
        async with self._tx() as conn:
            row = await sql.select_live_by_authorization(conn, network, asset, payer, nonce)
        return None if row is None else record_from_row(row._mapping)

    async def live_by_payment_identifier(self, payment_identifier: str) -> PaymentRecord | None:
        async with self._tx() as conn:
            row = await sql.select_live_by_payment_identifier(conn, payment_identifier)
        return None if row is None else record_from_row(row._mapping)

    async def select(
        self, state: State | None = None, *, updated_before: datetime | None = None
    ) -> list[PaymentRecord]:
        async with self._tx() as conn:
            rows = await sql.select_by_state(conn, state, updated_before)
        return [record_from_row(row._mapping) for row in rows]

    async def insert(self, values: Mapping[str, Any]) -> PaymentRecord:
        record = await self._write(*sql.insert_query(values))
        assert record is not None  # an INSERT ... RETURNING returns its row
        return record

    async def transition(
        self,
        record_id: str,
        *,
        sources: Sequence[State],
        tx_hash: str | None,
        values: Mapping[str, Any],
    ) -> PaymentRecord | None:
        statement, params = sql.transition_query(
            record_id, from_states=sources, tx_hash=tx_hash, values=values
        )
        return await self._write(statement, params)

    async def claim(
        self, record_id: str, *, now: datetime, stale_before: datetime
    ) -> PaymentRecord | None:
        params = {"p_id": record_id, "v_updated_at": now, "p_stale": stale_before}
        return await self._write(sql.CLAIM_RESPONSE, params)

    async def outstanding(
        self, network: str, asset: str, payer: str, *, now: int, settled_since: datetime
    ) -> tuple[int, int]:
        """One read on the write path's connection, so it sees every committed reservation."""
        params = sql.outstanding_params(network, asset, payer, now, settled_since)
        try:
            row = await self._writer.fetch_row(sql.OUTSTANDING, params)
        except (sa.exc.DBAPIError, OSError) as exc:
            raise _unavailable(exc) from exc
        count, total = row if row is not None else (0, 0)
        if isinstance(total, float) and total >= 2.0**53:  # SQLite's float may have rounded
            async with self._tx() as conn:
                total = sum(await sql.select_outstanding_amounts(conn, params))
        return int(count or 0), int(total or 0)
