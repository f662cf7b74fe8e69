"""The PostgreSQL ledger's write path: the statements of :mod:`x402gw.ledger._statements`, compiled once
for SQLAlchemy's asyncpg dialect and run with ``fetchrow`` on an asyncpg pool of its own.

Through SQLAlchemy's async engine each write costs a pool checkout with a pre-ping (a round trip),
BEGIN, the statement through a greenlet, and COMMIT. One ``INSERT``/``UPDATE ... RETURNING`` is
atomic on its own, so here it runs in autocommit: one round trip. The SQL text is the one the
engine would send (``$n`` placeholders with the dialect's casts); values and rows pass through
SQLAlchemy's own asyncpg type processors, so what is written here reads back the same through
the engine.

asyncpg is the ``postgres`` extra: the SQL store imports this module only for PostgreSQL.

The engine's asyncpg connections decode ``json`` with a codec of SQLAlchemy's; this pool keeps
asyncpg's default (``json`` as text: the bind processor already serializes) and parses the text
as the engine's codec would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from x402gw.ledger import _statements as sql
from x402gw.ledger._plans import Plans, Writer

_PLANS: Final = Plans(
    PGDialect_asyncpg(),  # type: ignore[no-untyped-call]
    {col.name: json.loads for col in sql.payments.c if isinstance(col.type, sa.JSON)},
)
compiled: Final = _PLANS.compiled

# As SQLAlchemy's pool: up to 15 connections, 30 s to get one.
_POOL_SIZE: Final = 15
_ACQUIRE_TIMEOUT: Final = 30.0
_DRIVER_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,  # refused, reset; TimeoutError (connect, acquire) is one too
)


def connect_args(url: sa.URL, schema: str | None) -> dict[str, Any]:
    """asyncpg connect arguments for an engine URL (host, port, user, password, database) and
    the ledger's schema, set as ``search_path`` as :func:`x402gw.ledger._statements.create_engine` does."""
    args: dict[str, Any] = {
        key: value
        for key, value in url.translate_connect_args(username="user").items()
        if key in ("host", "port", "user", "password", "database")
    }
    if schema is not None:
        args["server_settings"] = {"search_path": schema}
    return args


class PgWriter(Writer):
    """The ledger's writes on an asyncpg pool of their own, created on first use.

    Connections start with none open and are made as writes need them; a connection the server
    or the network closed is replaced on its next checkout, so the writer recovers once the
    database is back. A write on a connection cut mid-statement fails (``OperationalError``) and
    is not retried: it may have been committed.
    """

    plans = _PLANS
    integrity_errors = (asyncpg.IntegrityConstraintViolationError,)
    driver_errors = _DRIVER_ERRORS

    def __init__(self, url: sa.URL, schema: str | None = None) -> None:
        self._connect_args = connect_args(url, schema)
        # asyncpg connections belong to the event loop that made them: one pool per loop (an
        # app served by several test clients, or a CLI calling asyncio.run more than once).
        self._pools: dict[asyncio.AbstractEventLoop, asyncpg.Pool] = {}

    async def _get_pool(self) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        for gone in [other for other in self._pools if other.is_closed()]:
            del self._pools[gone]  # its loop is gone: the sockets go with the pool object
        # min_size=0: nothing connects here and no task keeps reconnecting in the background.
        pool = await asyncpg.create_pool(min_size=0, max_size=_POOL_SIZE, **self._connect_args)
        if loop in self._pools:  # another task made one meanwhile: keep that one
            await pool.close()
            return self._pools[loop]
        self._pools[loop] = pool
        return pool

    async def _fetch_row(self, text: str, args: list[Any]) -> Iterable[Any] | None:
        pool = await self._get_pool()
        async with pool.acquire(timeout=_ACQUIRE_TIMEOUT) as conn:
            row = await conn.fetchrow(text, *args)
        return None if row is None else row.values()

    async def close(self) -> None:
        """Close this loop's pool and drop the others' (a new one is made on the next write)."""
        loop = asyncio.get_running_loop()
        pools, self._pools = self._pools, {}
        for owner, pool in pools.items():
            if owner is loop:
                await asyncio.shield(pool.close())
            elif owner.is_running():  # a loop in another thread: close it there
                asyncio.run_coroutine_threadsafe(pool.close(), owner)
