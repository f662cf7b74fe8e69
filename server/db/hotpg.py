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
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.rawsql import RawStatement

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SIZE",
    "DatabaseUnavailable",
    "HotPostgres",
    "OutcomeUnknown",
    "end_lost",
    "first_row",
    "hot_postgres",
    "register",
]

DEFAULT_SIZE = 4
"""Connections per process and event loop (each statement holds one for a round trip)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection before the request is answered 503 (asyncpg's default: 60)."""
SLOT_TIMEOUT = 30.0
"""Seconds a call waits for a free connection before it is answered 503 (as SQLAlchemy's
``pool_timeout``): statements stuck on a lock or a dead network never queue the rest forever."""
STATEMENT_TIMEOUT = 10.0
"""Seconds one hot statement may run (they take well under a millisecond): past it, asyncpg
cancels it and drops the connection; a read is retried once, a write's outcome is settled as
for a lost connection (a network partition or a lock held elsewhere never holds a caller for
TCP's minutes)."""
CLOSE_TIMEOUT = 5.0
"""Seconds close() waits for the statements in flight, then for each connection to close."""
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

_SQLALCHEMY_ONLY = (
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
    "async_creator_fn",
)
"""Connect arguments SQLAlchemy's asyncpg adapter consumes itself (asyncpg.connect has none)."""


class DatabaseUnavailable(Exception):
    """The database could not run a hot statement: no connection, or it was lost (HTTP 503)."""


class OutcomeUnknown(DatabaseUnavailable):
    """A write was sent and its connection lost before the answer: it may have committed, or may
    still be running in its server process (``pid``, started at ``backend_start``)."""

    def __init__(self, pid: int, backend_start: Any) -> None:
        super().__init__(pid)
        self.pid = pid
        self.backend_start = backend_start


_BACKEND_START = "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
_END = RawStatement(
    # the lost write's server process, if it still exists (the start time tells it from a later
    # process given the same pid): terminated, waiting up to 5 s; NULL when it is already gone
    "SELECT bool_and(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
    "WHERE pid = ?::int AND backend_start IS NOT DISTINCT FROM "
    "coalesce(?::timestamptz, backend_start)"
)


@dataclass
class _LoopConnections:
    """The connections of one event loop (asyncpg connections are bound to their loop)."""

    size: int
    free: list[Any] = field(default_factory=list)
    slots: asyncio.Semaphore = field(init=False)
    opened: set[Any] = field(default_factory=set)
    closed: bool = False

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
        self._started: dict[int, Any] = {}  # server pid -> backend_start, of our connections

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
        for option in _SQLALCHEMY_ONLY:  # SQLAlchemy's adapter takes these; asyncpg refuses them
            kwargs.pop(option, None)
        if params.get("prepared_statement_cache_size") == 0:  # no cached statements (pgbouncer)
            kwargs.setdefault("statement_cache_size", 0)
        settings = dict(kwargs.get("server_settings") or {})
        settings.setdefault("application_name", APPLICATION_NAME)
        kwargs["server_settings"] = settings
        return cls(kwargs, size)

    def _here(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            # a loop that ended is kept alive by its connections (they reference it): drop them
            for ended in [other for other in self._loops if other.is_closed()]:
                del self._loops[ended]
            state = self._loops[loop] = _LoopConnections(self.size)
        return state

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        state = self._here()
        if state.slots.locked():  # all in use: wait, but not forever
            try:
                async with asyncio.timeout(SLOT_TIMEOUT):
                    await state.slots.acquire()
            except TimeoutError:
                raise DatabaseUnavailable from None
        else:
            await state.slots.acquire()  # no suspension (and no timer) while a slot is free
        try:
            if state.closed:  # waited for a slot while close() ran
                raise DatabaseUnavailable
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
                try:  # who this is on the server, to end it if a write is lost (end_lost)
                    self._started[conn.get_server_pid()] = await conn.fetchval(_BACKEND_START)
                except BaseException:
                    conn.terminate()
                    raise
                if state.closed:  # close() ran meanwhile: nothing would close this one
                    conn.terminate()
                    raise DatabaseUnavailable
                state.opened.add(conn)
            try:
                yield conn
            except asyncpg.PostgresError:  # the server refused the statement: conn still good
                if state.closed:
                    conn.terminate()
                else:
                    state.free.append(conn)
                raise
            except BaseException:  # connection-level failure or cancellation: never reuse
                state.opened.discard(conn)
                self.dropped += 1
                conn.terminate()
                raise
            if state.closed:  # handed back after close() began: no reuse, end it now
                conn.terminate()
            else:
                state.free.append(conn)
        finally:
            state.slots.release()

    async def first(
        self, statement: RawStatement, params: Sequence[Any], *, read_only: bool = False
    ) -> tuple[Any, ...] | None:
        """The first row of ``statement`` run alone, in autocommit (None without one).

        DatabaseUnavailable when the connection fails; a ``read_only`` statement is tried once
        more on a new connection first (a write is not: it may have committed), and a write
        sent on a connection then lost raises OutcomeUnknown (see :meth:`end`).
        """
        for attempt in (1, 2):
            backend: tuple[int, Any] | None = None
            try:
                async with self._connection() as conn:
                    pid = conn.get_server_pid()
                    backend = (pid, self._started.get(pid))
                    record = await conn.fetchrow(
                        statement.postgresql, *params, timeout=STATEMENT_TIMEOUT
                    )
            except _LOST as exc:
                if read_only and attempt == 1:
                    continue
                # the cause is for the operator (an SSL or address mistake looks the same to
                # callers); asyncpg's messages name the server, never the password
                log.warning("hot statement failed: %s: %s", type(exc).__name__, exc)
                if backend is not None and not read_only:
                    raise OutcomeUnknown(*backend) from None
                raise DatabaseUnavailable from None
            return tuple(record) if record is not None else None
        raise AssertionError("unreachable")  # pragma: no cover

    async def end(self, lost: OutcomeUnknown) -> bool:
        """Make sure the server process of a lost write has ended (terminated if it still runs,
        so its statement commits before this returns or never); False when that is not sure."""
        try:
            row = await self.first(_END, (lost.pid, lost.backend_start), read_only=True)
        except (DatabaseUnavailable, asyncpg.PostgresError) as exc:
            log.warning("could not end a lost write's server process: %s", type(exc).__name__)
            return False
        return row is None or row[0] is not False

    async def close(self) -> None:
        """Close every connection of the running loop once the statements in flight there end
        (a shielded debit books whole; at most CLOSE_TIMEOUT seconds); abort those of other
        loops (a loop already closed frees its connections when it is collected). Later calls
        open new connections, as an engine's pool does after ``dispose()``."""
        current = asyncio.get_running_loop()
        states = list(self._loops.items())
        self._loops.clear()
        for loop, state in states:
            state.closed = True
            if loop is current:
                await self._drain(state)
            idle = set(state.free)
            conns = list(state.opened)
            state.opened.clear()
            state.free.clear()
            for conn in conns:
                if loop is current and conn not in idle:  # still running after the wait
                    conn.terminate()  # its caller sees a lost connection (503), not a cancel
                elif loop is current:
                    try:
                        await asyncio.wait_for(conn.close(), timeout=CLOSE_TIMEOUT)
                    except Exception:
                        conn.terminate()
                elif loop.is_closed():
                    continue
                elif loop.is_running():
                    loop.call_soon_threadsafe(conn.terminate)
                else:
                    conn.terminate()

    async def _drain(self, state: _LoopConnections) -> None:
        """Wait (at most CLOSE_TIMEOUT seconds) until no statement of ``state`` is in flight."""
        taken = 0
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while taken < self.size:
                    await state.slots.acquire()
                    taken += 1
        except TimeoutError:
            pass
        finally:
            for _ in range(taken):  # waiters behind see ``closed`` and give up
                state.slots.release()


_REGISTRY: weakref.WeakKeyDictionary[Any, HotPostgres] = weakref.WeakKeyDictionary()


def register(engine: AsyncEngine, hot: HotPostgres) -> None:
    """Let the stores of ``engine`` run their hot statements on ``hot``."""
    _REGISTRY[engine.sync_engine] = hot


def hot_postgres(engine: AsyncEngine) -> HotPostgres | None:
    """The hot connections registered for ``engine`` (None: use the engine's pool)."""
    return _REGISTRY.get(engine.sync_engine)


async def end_lost(engine: AsyncEngine, lost: OutcomeUnknown) -> bool:
    """:meth:`HotPostgres.end` on ``engine``'s hot connections (False without them)."""
    hot = _REGISTRY.get(engine.sync_engine)
    return await hot.end(lost) if hot is not None else False


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
