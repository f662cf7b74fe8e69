"""Fixtures for the server tests: a PostgreSQL database per run, a schema per test, app clients.

`client` answers DNS from an in-memory stub (no daemon); `lab_client` asks the NSD lab.
"""

from __future__ import annotations

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


@pytest.fixture
def pg_schema(pg_database: str) -> Iterator[tuple[str, str]]:
    """(database URL, fresh schema name) for one test; the schema is dropped afterwards."""
    schema = "t_" + secrets.token_hex(6)
    sync_url = pg_database.replace("postgresql+asyncpg://", "postgresql://")
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
    """Settings for SQLite and (second run) PostgreSQL in a fresh schema."""
    if request.param == "sqlite":
        return load_settings(env_file=None, database_url=request.getfixturevalue("sqlite_url"))
    url, schema = request.getfixturevalue("pg_schema")
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
