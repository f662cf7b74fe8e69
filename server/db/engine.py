"""The async engine for one database URL, with migrations and a liveness ping."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.db import hotpg
from server.db.migrate import upgrade

__all__ = ["Database"]


SQLITE_PRAGMAS = (
    # First, so that switching a new file to WAL waits for another process's lock instead of
    # failing at once with "database is locked"; as long as the payment ledger's, which shares
    # the file.
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA journal_mode=WAL",
    # Under WAL, NORMAL syncs the log at checkpoints instead of at every commit: a committed
    # transaction survives a crash of the process (it is in the WAL file), but the last few may be
    # lost on power loss or an OS crash (the database stays consistent: the ledger and balances
    # agree). The payment ledger (x402gw) makes the same trade; PostgreSQL is the durable choice.
    "PRAGMA synchronous=NORMAL",
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


class DatabaseSettings(Protocol):
    """What :meth:`Database.from_settings` reads (server.settings.Settings has it)."""

    @property
    def database_url(self) -> str: ...
    @property
    def database_schema(self) -> str | None: ...
    @property
    def database_hot_connections(self) -> int: ...


class Database:
    """Owns the engine: ``migrate()`` at start, ``ping()`` for readiness, ``dispose()`` at stop."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        hot_connections: int = hotpg.DEFAULT_SIZE,
        **engine_kwargs: Any,
    ) -> None:
        """``schema`` (PostgreSQL only) becomes the connection's ``search_path``;
        ``hot_connections`` (PostgreSQL only; 0: none) asyncpg connections of the process's own
        run the keyed API's per-request statements (:mod:`server.db.hotpg`)."""
        self.url = url
        self.schema = schema
        if schema is not None:
            if not url.startswith("postgresql"):
                raise ValueError("a database schema can only be set for PostgreSQL")
            engine_kwargs.setdefault("connect_args", {}).setdefault("server_settings", {})[
                "search_path"
            ] = schema
        self.engine: AsyncEngine = create_async_engine(url, **engine_kwargs)
        self.dialect: str = self.engine.dialect.name
        self.hot: hotpg.HotPostgres | None = None
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        elif self.dialect == "postgresql" and self.engine.driver == "asyncpg" and hot_connections:
            connect_args = engine_kwargs.get("connect_args")
            self.hot = hotpg.HotPostgres.for_engine(self.engine, connect_args, hot_connections)
            hotpg.register(self.engine, self.hot)

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        """The database a server process's settings name."""
        return cls(
            settings.database_url,
            schema=settings.database_schema,
            hot_connections=settings.database_hot_connections,
        )

    async def migrate(self) -> None:
        """Apply every pending Alembic revision (processes migrating at once take turns)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade)

    async def ping(self) -> None:
        """Run ``SELECT 1``; raises if the database cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection (and the hot ones)."""
        if self.hot is not None:
            await self.hot.close()
        await self.engine.dispose()
