"""The SQLite ledger's write path: the statements of :mod:`x402gw.ledger._statements`, compiled once for
SQLite and run on one aiosqlite connection in autocommit mode.

Through SQLAlchemy's async engine each statement costs a greenlet switch and several hops to the
driver thread (begin, execute, fetch, commit): about 0.6 ms of CPU, more than SQLite takes to
run it. One ``INSERT``/``UPDATE ... RETURNING`` is atomic on its own, so here it is one hop.
Values and rows pass through SQLAlchemy's own SQLite type processors, so what is written here
reads back the same through the engine, and the SQL text is the one the engine would send.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from typing import Any, Final

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite

from x402gw.ledger import _statements as sql
from x402gw.ledger._plans import Plans, Writer

_PLANS: Final = Plans(SQLiteDialect_aiosqlite())
compiled: Final = _PLANS.compiled


class SqliteWriter(Writer):
    """The ledger's writes on a dedicated autocommit connection, opened on first use."""

    plans = _PLANS
    integrity_errors = (sqlite3.IntegrityError,)
    driver_errors = (sqlite3.Error, ValueError)  # ValueError: the connection was closed

    def __init__(self, database: str) -> None:
        self._database = database
        self._conn: aiosqlite.Connection | None = None

    async def _connection(self) -> aiosqlite.Connection:
        conn = self._conn
        if conn is not None:
            return conn
        pending = aiosqlite.connect(self._database, isolation_level=None)
        # As SQLAlchemy does for its aiosqlite connections: the driver thread must not keep the
        # process alive when the ledger is never closed (every statement is committed already).
        thread: Any = getattr(pending, "_thread", pending)  # aiosqlite < 0.22 is the thread
        thread.daemon = True
        conn = await pending
        try:
            for pragma in sql.SQLITE_PRAGMAS:
                await conn.execute(pragma)
        except BaseException:
            await conn.close()
            raise
        if self._conn is not None:  # another task opened one meanwhile: keep that one
            await conn.close()
            return self._conn
        self._conn = conn
        return conn

    async def _fetch_row(self, text: str, args: list[Any]) -> Iterable[Any] | None:
        conn = await self._connection()
        for row in await conn.execute_fetchall(text, args):
            return tuple(row)
        return None

    async def close(self) -> None:
        """Close the connection (it reopens on the next write)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.shield(conn.close())
