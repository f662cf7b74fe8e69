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

import asyncio
import contextlib
import logging
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = [
    "UNIQUE_VIOLATIONS",
    "Busy",
    "InlineSqlite",
    "RawStatement",
    "driver",
    "immediate",
    "inline_sqlite",
    "numbered",
]

log = logging.getLogger("server.db.rawsql")

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


class Busy(Exception):
    """The inline connection would have to wait for a lock: take the pooled path instead."""


_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes & 0xFF)
CHECKPOINT_EVERY = 200
"""Inline commits between two passive WAL checkpoints (run in a thread, never on the loop)."""
_INLINE_PRAGMAS = (
    "PRAGMA busy_timeout=0",  # never wait on the event loop: Busy, and the caller goes pooled
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",  # a commit writes the WAL, no fsync (see server.db.engine)
    "PRAGMA wal_autocheckpoint=0",  # a checkpoint fsyncs: done in a thread instead
)


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    return "locked" in str(exc).lower()  # pragma: no cover - Python < 3.11


class InlineSqlite:
    """One SQLite connection run on the event loop's own thread, for the keyed API's few
    statements of microseconds (key lookup, sync-call debit): each thread hop to aiosqlite and
    back cost more than the statement, several times over under load.

    It never blocks the loop: no busy wait (a lock held elsewhere raises :class:`Busy` and the
    caller runs the same statements on the pooled connection), no fsync at commit
    (``synchronous=NORMAL`` in WAL mode) and no checkpoint on the loop (a passive checkpoint runs
    in a thread every :data:`CHECKPOINT_EVERY` commits). Only for a database in WAL mode.
    """

    checkpoint_every = CHECKPOINT_EVERY

    def __init__(self, path: str) -> None:
        self.path = path
        self.checkpoints = 0
        self._conn: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._not_before = 0.0  # after a failed open: when to try again (pooled until then)

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            if time.monotonic() < self._not_before:
                raise Busy
            self._not_before = time.monotonic() + 1.0
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                for pragma in _INLINE_PRAGMAS:
                    conn.execute(pragma)
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            except sqlite3.OperationalError as exc:
                conn.close()
                if _busy(exc):
                    raise Busy from None
                raise
            if str(mode).lower() != "wal":  # a reader could then wait on a writer
                conn.close()
                raise Busy
            self._conn = conn
        return conn

    def first(self, statement: RawStatement, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row of a read (None without one); Busy when it would wait."""
        try:
            rows = self._connection().execute(statement.sql, tuple(params)).fetchmany(1)
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise Busy from None
            raise
        return tuple(rows[0]) if rows else None

    @contextlib.contextmanager
    def immediate(self) -> Iterator[sqlite3.Connection]:
        """The connection inside ``BEGIN IMMEDIATE`` (Busy when another holds the write lock),
        committed, or rolled back on any exception."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise Busy from None
            raise
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._committed()

    def _committed(self) -> None:
        self._commits += 1
        if self._commits % self.checkpoint_every == 0 and (
            self._checkpointing is None or self._checkpointing.done()
        ):
            self._checkpointing = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        def run() -> None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                conn.close()

        try:
            await asyncio.to_thread(run)
            self.checkpoints += 1
        except sqlite3.Error as exc:  # the next one tries again; a busy WAL only grows a while
            log.warning("WAL checkpoint failed (%s)", exc)

    def close(self) -> None:
        """Close the connection (reopened on next use)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


_INLINE: weakref.WeakKeyDictionary[Any, dict[int, InlineSqlite | None]] = (
    weakref.WeakKeyDictionary()
)


def inline_sqlite(engine: AsyncEngine) -> InlineSqlite | None:
    """The engine's inline connection for this thread (None: not a SQLite file database)."""
    per_thread = _INLINE.get(engine.sync_engine)
    if per_thread is None:
        per_thread = _INLINE[engine.sync_engine] = {}
    ident = threading.get_ident()
    if ident not in per_thread:
        url = engine.url
        path = url.database or ""
        usable = (
            engine.dialect.name == "sqlite"
            and bool(path)
            and path != ":memory:"
            and not path.startswith("file:")
            and not url.query
        )
        per_thread[ident] = InlineSqlite(path) if usable else None
    return per_thread[ident]
