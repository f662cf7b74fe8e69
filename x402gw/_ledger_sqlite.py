"""The SQLite ledger's write path: the statements of :mod:`x402gw._ledger_sql`, compiled once for
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiosqlite
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.sql.compiler import SQLCompiler

from x402gw import _ledger_sql as sql

_DIALECT: Final = SQLiteDialect_aiosqlite()
_Processor = Callable[[Any], Any] | None
_Statement = sa.Insert | sa.Update


def _result_processors() -> tuple[tuple[str, _Processor], ...]:
    return tuple(
        (col.name, col.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None))
        for col in sql.payments.c
    )


_ROW: Final = _result_processors()


@dataclass(frozen=True, slots=True)
class _Compiled:
    """SQL text and, in parameter order, each parameter's name and bind processor."""

    text: str
    params: tuple[tuple[str, _Processor], ...]


_plans: dict[int, tuple[_Statement, _Compiled]] = {}


def compiled(statement: _Statement) -> _Compiled:
    """The SQLite text and parameter plan of ``statement`` (cached by identity: the statements
    come from the builders in :mod:`x402gw._ledger_sql`, which cache them)."""
    found = _plans.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1]
    done = statement.compile(dialect=_DIALECT)
    assert isinstance(done, SQLCompiler)
    positions = done.positiontup or []
    params = tuple(
        (name, done.binds[name].type.dialect_impl(_DIALECT).bind_processor(_DIALECT))
        for name in positions
    )
    plan = _Compiled(str(done), params)
    _plans[id(statement)] = (statement, plan)  # the statement is kept, so its id stays unique
    return plan


def _row(values: tuple[Any, ...]) -> dict[str, Any]:
    return {
        name: value if proc is None or value is None else proc(value)
        for (name, proc), value in zip(_ROW, values, strict=True)
    }


class SqliteWriter:
    """The ledger's writes on a dedicated autocommit connection, opened on first use.

    Errors come out as SQLAlchemy's (``IntegrityError`` for a unique-index conflict,
    ``OperationalError`` otherwise) so the ledger treats both paths alike.
    """

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

    async def fetch_one(
        self, statement: _Statement, values: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Run one ``... RETURNING`` statement; the first row returned, or None."""
        plan = compiled(statement)
        args = [values[name] if proc is None else proc(values[name]) for name, proc in plan.params]
        try:
            conn = await self._connection()
            rows = await conn.execute_fetchall(plan.text, args)
        except sqlite3.IntegrityError as exc:
            raise sa.exc.IntegrityError(plan.text, args, exc) from exc
        except (sqlite3.Error, ValueError) as exc:  # ValueError: the connection was closed
            raise sa.exc.OperationalError(plan.text, args, exc) from exc
        for row in rows:
            return _row(tuple(row))
        return None

    async def close(self) -> None:
        """Close the connection (it reopens on the next write)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.shield(conn.close())
