"""Fixtures for the server tests: a PostgreSQL database per run, a schema (or the reset migrated
one) per test, app clients.

`client` answers DNS from an in-memory stub (no daemon); `lab_client` asks the NSD lab.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from lab.anvil import AnvilChain, running_chain
from lab.dnslab import DnsLab
from lab.stubdns import StubResolver
from starlette.applications import Starlette

from emailintel.dns import DnsResolver
from server.app import create_app
from server.db.engine import Database
from server.settings import Settings, load_settings

PG_ADMIN = os.environ.get("BAVLIO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL unreachable at {PG_ADMIN} ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A uniquely named database for this run (SQLAlchemy asyncpg URL), dropped at the end."""
    name = "bavlio_test_" + secrets.token_hex(4)
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MigratedSchema:
    """One schema migrated to head, handed to test after test: before each, its rows (and
    sequences) go back to what the migrations left, which costs a few DELETEs instead of every
    revision's DDL. A test that changed its structure (tables, columns, indexes, types: a
    downgrade, another tree's tables) gets a newly migrated schema instead."""

    def __init__(self, pg_database: str) -> None:
        self.url = pg_database
        self.schema = ""
        self.fingerprint = ""
        self.spent: list[str] = []  # schemas given up on, dropped at the end
        self.seeded: list[str] = []  # tables the migrations put rows in
        self.sequences: list[tuple[str, int, bool]] = []  # (name, value, is_called)

    def take(self) -> tuple[str, str]:
        """(database URL, schema) at head with the rows the migrations left, nothing else."""
        with psycopg.connect(_sync(self.url), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            if self.schema and self._fingerprint(conn) == self.fingerprint:
                try:
                    self._reset(conn)
                    return self.url, self.schema
                except psycopg.Error:
                    pass  # locked by a leftover connection: start afresh
            self._fresh(conn)
        return self.url, self.schema

    def drop_all(self) -> None:
        """Drop every schema this made."""
        with psycopg.connect(_sync(self.url), autocommit=True) as conn:
            for schema in [*self.spent, self.schema]:
                if schema:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema}_seed CASCADE")

    def _fresh(self, conn: psycopg.Connection[Any]) -> None:
        if self.schema:
            self.spent.append(self.schema)
        self.schema = "t_" + secrets.token_hex(6)
        conn.execute(f"CREATE SCHEMA {self.schema}")
        database = Database(self.url, schema=self.schema)

        async def migrate() -> None:
            try:
                await database.migrate()
            finally:
                await database.dispose()

        # its own thread and event loop: fixtures may run inside a test's loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, migrate()).result()
        # what the migrations left: seeded rows (copied aside) and sequence positions
        conn.execute(f"CREATE SCHEMA {self.schema}_seed")
        for table in self._tables(conn):
            conn.execute(f"CREATE TABLE {self.schema}_seed.{table} AS TABLE {self.schema}.{table}")
        self.seeded = [
            table
            for table in self._tables(conn)
            if conn.execute(f"SELECT EXISTS (SELECT FROM {self.schema}.{table})").fetchone()
            == (True,)
        ]
        self.sequences = conn.execute(
            "SELECT sequencename, coalesce(last_value, start_value), last_value IS NOT NULL "
            "FROM pg_sequences "
            "WHERE schemaname = %s",
            (self.schema,),
        ).fetchall()
        self.fingerprint = self._fingerprint(conn)

    def _reset(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")  # no FK order to follow
            for table in self._tables(conn):
                conn.execute(f"DELETE FROM {self.schema}.{table}")
            for table in self.seeded:
                conn.execute(
                    f"INSERT INTO {self.schema}.{table} SELECT * FROM {self.schema}_seed.{table}"
                )
            for name, last_value, is_called in self.sequences:
                conn.execute(
                    "SELECT setval(%s, %s, %s)",
                    (f"{self.schema}.{name}", last_value, is_called),
                )

    def _tables(self, conn: psycopg.Connection[Any]) -> list[str]:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
            (self.schema,),
        ).fetchall()
        return [row[0] for row in rows]

    def _fingerprint(self, conn: psycopg.Connection[Any]) -> str:
        """Every relation, column, constraint and type of the schema, by identity."""
        row = conn.execute(
            """
            SELECT md5(concat_ws('|',
              (SELECT string_agg(concat_ws(':', c.oid, c.relname, c.relkind), ',' ORDER BY c.oid)
                 FROM pg_class c WHERE c.relnamespace = n.oid),
              (SELECT string_agg(concat_ws(':', a.attrelid, a.attname, a.atttypid, a.attnotnull, a.attisdropped, a.atthasdef), ',' ORDER BY a.attrelid, a.attnum)
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                WHERE c.relnamespace = n.oid),
              (SELECT string_agg(concat_ws(':', k.oid, k.conname), ',' ORDER BY k.oid)
                 FROM pg_constraint k WHERE k.connamespace = n.oid),
              (SELECT string_agg(concat_ws(':', t.oid, t.typname), ',' ORDER BY t.oid)
                 FROM pg_type t WHERE t.typnamespace = n.oid),
              (SELECT string_agg(d.oid::text, ',' ORDER BY d.oid)
                 FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid
                WHERE c.relnamespace = n.oid),
              (SELECT string_agg(concat_ws(':', p.oid, p.proname), ',' ORDER BY p.oid)
                 FROM pg_proc p WHERE p.pronamespace = n.oid),
              (SELECT string_agg(concat_ws(':', g.oid, g.tgname), ',' ORDER BY g.oid)
                 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
                WHERE c.relnamespace = n.oid)))
              FROM pg_namespace n WHERE n.nspname = %s
            """,
            (self.schema,),
        ).fetchone()
        return str(row[0]) if row else ""


@pytest.fixture(scope="session")
def pg_migrated_pool(pg_database: str) -> Iterator[MigratedSchema]:
    """The run's MigratedSchema."""
    pool = MigratedSchema(pg_database)
    yield pool
    pool.drop_all()


@pytest.fixture
def pg_migrated(pg_migrated_pool: MigratedSchema) -> tuple[str, str]:
    """(database URL, schema) already at head with only the rows the migrations left: the same
    state a new schema has once migrated, at a fraction of the cost. For tests of migrating
    itself, use `pg_schema`."""
    return pg_migrated_pool.take()


def _sync(url: str) -> str:
    """A SQLAlchemy asyncpg URL as a libpq one."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
def pg_schema(pg_database: str) -> Iterator[tuple[str, str]]:
    """(database URL, fresh schema name) for one test; the schema is dropped afterwards."""
    schema = "t_" + secrets.token_hex(6)
    sync_url = _sync(pg_database)
    with psycopg.connect(sync_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield pg_database, schema
    with psycopg.connect(sync_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temporary directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'bavlio.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for SQLite (a new file) and (second run) PostgreSQL: a database already at head,
    or with the `unmigrated` mark an empty schema, for tests that migrating itself is the point."""
    if request.param == "sqlite":
        return load_settings(env_file=None, database_url=request.getfixturevalue("sqlite_url"))
    fresh = request.node.get_closest_marker("unmigrated") is not None
    url, schema = request.getfixturevalue("pg_schema" if fresh else "pg_migrated")
    return load_settings(env_file=None, database_url=url, database_schema=schema)


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    """Default settings on a fresh SQLite file, no RPC configured."""
    return load_settings(env_file=None, database_url=sqlite_url)


@pytest.fixture
def lab_resolver(dns_lab: DnsLab) -> DnsResolver:
    """A resolver pointed at the NSD lab (names outside the lab get NXDOMAIN)."""
    return DnsResolver([dns_lab.nameserver], timeout=2.0)


@pytest.fixture
def stub_resolver() -> StubResolver:
    """An in-memory resolver mirroring a few lab zones (acme.test, multi.test, nullmx.test, ...)."""
    return StubResolver()


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilChain]:
    """A real anvil chain (id 31337) for the readiness RPC check."""
    with running_chain() as chain:
        yield chain


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an in-process client (app exceptions become 500s)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bavlio.test") as client,
    ):
        yield client


@pytest_asyncio.fixture(loop_scope="function")
async def client(
    settings: Settings, stub_resolver: StubResolver
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the default app on SQLite with the in-memory stub resolver."""
    async with serving(create_app(settings, resolver=stub_resolver)) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="function")
async def lab_client(
    settings: Settings, lab_resolver: DnsResolver
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the default app on SQLite with the DNS lab resolver (real DNS answers)."""
    async with serving(create_app(settings, resolver=lab_resolver)) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="function")
async def db(backend_settings: Settings) -> AsyncIterator[Database]:
    """A migrated database on SQLite and (second run) PostgreSQL, disposed afterwards."""
    database = Database(backend_settings.database_url, schema=backend_settings.database_schema)
    await database.migrate()
    try:
        yield database
    finally:
        await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")
async def keyed(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Keyed]:
    """The keyed API on SQLite and (second run) PostgreSQL."""
    async with keyed_app(keyed_settings(backend_settings, tmp_path)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="function")
async def idle(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Keyed]:
    """The keyed API without a worker: queued jobs stay queued (a started session stays
    processing; routes that only need ids do not wait for results)."""
    settings = keyed_settings(backend_settings, tmp_path, embedded_worker=False)
    async with keyed_app(settings) as running:
        yield running
