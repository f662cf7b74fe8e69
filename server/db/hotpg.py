"""A few asyncpg connections of the process's own for the keyed API's hot statements.

Every keyed request runs two one-row statements (the key lookup, then the debit with its ledger
line). Through SQLAlchemy's async pool each cost 175–300 µs of CPU beyond asyncpg's own ~60 µs (a
greenlet hop to check out, another for the driver connection, a shielded task to return it), and
asyncpg's own pool resets a connection with an extra round trip on every release. These
connections run only single statements in autocommit, so nothing needs resetting: a connection is
taken from a free list and put back, and one that failed at the connection level (not a SQL
error) is dropped and replaced on next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.rawsql import RawStatement

__all__ = [
    "DEFAULT_SIZE",
    "DatabaseUnavailable",
    "HotPostgres",
    "first_row",
    "hot_postgres",
    "register",
]

DEFAULT_SIZE = 4
"""Connections per process and event loop (each statement holds one for a round trip)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection before the request is answered 503 (asyncpg's default: 60)."""
APPLICATION_NAME = "bavlio-hot"
"""How these connections show in ``pg_stat_activity`` (unless the connect arguments name one)."""

_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.ConnectionDoesNotExistError,  # closed under us (server restart, network)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
"""Failures of the connection, not of the statement: the server is down or unreachable."""


class DatabaseUnavailable(Exception):
    """The database could not run a hot statement: no connection, or it was lost (HTTP 503)."""


@dataclass
class _LoopConnections:
    """The connections of one event loop (asyncpg connections are bound to their loop)."""

    size: int
    free: list[Any] = field(default_factory=list)
    slots: asyncio.Semaphore = field(init=False)
    opened: set[Any] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.size)


class HotPostgres:
    """At most ``size`` asyncpg connections per event loop, for single statements only."""

    def __init__(self, connect_kwargs: dict[str, Any], size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("a hot connection set needs at least one connection")
        self.size = size
        self._connect_kwargs = dict(connect_kwargs)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnections] = (
            weakref.WeakKeyDictionary()
        )
        self.connects = 0
        self.dropped = 0

    @classmethod
    def for_engine(
        cls,
        engine: AsyncEngine,
        connect_args: dict[str, Any] | None = None,
        size: int = DEFAULT_SIZE,
    ) -> HotPostgres:
        """The server, database and user of ``engine``'s URL, with the ``connect_args`` its pool
        was given (``server_settings`` such as the ``search_path``)."""
        _, params = engine.dialect.create_connect_args(engine.url)
        kwargs: dict[str, Any] = {"timeout": CONNECT_TIMEOUT, **params, **(connect_args or {})}
        settings = dict(kwargs.get("server_settings") or {})
        settings.setdefault("application_name", APPLICATION_NAME)
        kwargs["server_settings"] = settings
        return cls(kwargs, size)

    def _here(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopConnections(self.size)
        return state

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        state = self._here()
        await state.slots.acquire()  # no suspension while a slot is free
        try:
            conn = None
            while state.free:
                candidate = state.free.pop()
                if not candidate.is_closed():
                    conn = candidate
                    break
                state.opened.discard(candidate)
            if conn is None:
                conn = await asyncpg.connect(**self._connect_kwargs)
                self.connects += 1
                state.opened.add(conn)
            try:
                yield conn
            except asyncpg.PostgresError:  # the server refused the statement: conn still good
                state.free.append(conn)
                raise
            except BaseException:  # connection-level failure or cancellation: never reuse
                state.opened.discard(conn)
                self.dropped += 1
                conn.terminate()
                raise
            state.free.append(conn)
        finally:
            state.slots.release()

    async def first(
        self, statement: RawStatement, params: Sequence[Any], *, read_only: bool = False
    ) -> tuple[Any, ...] | None:
        """The first row of ``statement`` run alone, in autocommit (None without one).

        DatabaseUnavailable when the connection fails; a ``read_only`` statement is tried once
        more on a new connection first (a write is not: it may have committed).
        """
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    record = await conn.fetchrow(statement.postgresql, *params)
            except _LOST:
                if read_only and attempt == 1:
                    continue
                raise DatabaseUnavailable from None
            return tuple(record) if record is not None else None
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Close every connection of the running loop; abort those of other loops (a loop
        already closed frees its connections when it is collected)."""
        current = asyncio.get_running_loop()
        for loop, state in list(self._loops.items()):
            conns = list(state.opened)
            state.opened.clear()
            state.free.clear()
            for conn in conns:
                if loop is current:
                    try:
                        await asyncio.wait_for(conn.close(), timeout=5)
                    except (TimeoutError, OSError, asyncpg.PostgresError):
                        conn.terminate()
                elif loop.is_closed():
                    continue
                elif loop.is_running():
                    loop.call_soon_threadsafe(conn.terminate)
                else:
                    conn.terminate()
        self._loops.clear()


_REGISTRY: weakref.WeakKeyDictionary[Any, HotPostgres] = weakref.WeakKeyDictionary()


def register(engine: AsyncEngine, hot: HotPostgres) -> None:
    """Let the stores of ``engine`` run their hot statements on ``hot``."""
    _REGISTRY[engine.sync_engine] = hot


def hot_postgres(engine: AsyncEngine) -> HotPostgres | None:
    """The hot connections registered for ``engine`` (None: use the engine's pool)."""
    return _REGISTRY.get(engine.sync_engine)


async def first_row(
    engine: AsyncEngine, statement: RawStatement, params: Sequence[Any], *, read_only: bool = False
) -> tuple[Any, ...] | None:
    """The first row of ``statement`` run alone: on the hot connections when ``engine`` has
    them (see :meth:`HotPostgres.first`), else on a pooled connection (PostgreSQL in
    autocommit)."""
    hot = _REGISTRY.get(engine.sync_engine)
    if hot is not None:
        return await hot.first(statement, params, read_only=read_only)
    async with engine.connect() as conn:
        return await statement.first(conn, params)
