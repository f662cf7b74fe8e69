"""Write transactions that serialise correctly on both backends.

SQLite's default deferred transaction takes its write lock at the first write, so two readers that
both go on to write deadlock into "database is locked"; ``BEGIN IMMEDIATE`` takes the lock first.
PostgreSQL needs nothing special: the conditional UPDATEs are atomic per row.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["read_connection", "write_transaction"]


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that holds the write lock from its start (SQLite)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            await conn.begin()
        try:
            yield conn
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


@contextlib.asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads (its implicit transaction ends when it closes)."""
    async with engine.connect() as conn:
        yield conn
