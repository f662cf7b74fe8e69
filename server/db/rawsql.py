"""Hot-path SQL sent straight to the driver under a pooled SQLAlchemy connection.

Building and compiling a SQLAlchemy Core statement, and the async adapter's hops to the driver
(cursor, execute, fetch, close: each a trip to aiosqlite's thread; BEGIN and ROLLBACK around
every asyncpg read), cost more than SQLite or PostgreSQL takes to run a one-row query. The few
statements of every keyed request (key lookup, debit) are written once with ``?`` placeholders,
renumbered to ``$n`` for asyncpg, and run on the driver connection: one hop or round trip each.
A lone PostgreSQL statement runs in autocommit (atomic on its own); SQLite writes go inside
:func:`immediate` (``BEGIN IMMEDIATE``, as :mod:`server.db.tx`).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["UNIQUE_VIOLATIONS", "RawStatement", "driver", "immediate", "numbered"]

_MARK = re.compile(r"\?")


def _unique_violations() -> tuple[type[BaseException], ...]:
    try:
        from asyncpg.exceptions import UniqueViolationError  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return (sqlite3.IntegrityError,)
    return (sqlite3.IntegrityError, UniqueViolationError)


UNIQUE_VIOLATIONS = _unique_violations()
"""What the drivers raise when a unique key (or another constraint, on SQLite) refuses a row."""


def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1``, ``$2``, … (PostgreSQL's native style; no ``?`` in literals)."""
    count = 0

    def next_mark(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _MARK.sub(next_mark, sql)


async def driver(conn: AsyncConnection) -> Any:
    """The driver's own connection under ``conn`` (an aiosqlite or asyncpg connection)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection


@contextlib.asynccontextmanager
async def immediate(conn: AsyncConnection) -> AsyncIterator[Any]:
    """SQLite: the driver connection inside ``BEGIN IMMEDIATE`` (committed, or rolled back on
    any exception)."""
    aio = await driver(conn)
    await aio.execute_fetchall("BEGIN IMMEDIATE", ())
    try:
        yield aio
    except BaseException:
        await aio.rollback()
        raise
    await aio.commit()


@dataclass(frozen=True)
class RawStatement:
    """One SQL text in ``?`` style and its PostgreSQL form."""

    sql: str
    postgresql: str = field(init=False)

    def __post_init__(self) -> None:
        if "'?'" in self.sql:
            raise ValueError("a literal '?' would be renumbered")
        object.__setattr__(self, "postgresql", numbered(self.sql))

    def text(self, dialect: str) -> str:
        """The text for ``dialect`` (``postgresql`` or ``sqlite``)."""
        return self.postgresql if dialect == "postgresql" else self.sql

    async def first(self, conn: AsyncConnection, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row (None without one); on PostgreSQL in autocommit."""
        drv = await driver(conn)
        return await self.first_on(drv, conn.dialect.name, params)

    async def first_on(
        self, drv: Any, dialect: str, params: Sequence[Any]
    ) -> tuple[Any, ...] | None:
        """:meth:`first` on a driver connection already in hand (inside :func:`immediate`)."""
        if dialect == "postgresql":
            record = await drv.fetchrow(self.postgresql, *params)
            return tuple(record) if record is not None else None
        for row in await drv.execute_fetchall(self.sql, tuple(params)):
            return tuple(row)
        return None
