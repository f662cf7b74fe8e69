"""Fixtures for ledger and lock tests: a fresh SQLite file, PostgreSQL schema or in-memory store per
test, Redis.

A pytest plugin, registered by ``pytest_plugins`` in tests/conftest.py (so tests just name the
fixtures); the helpers (:class:`Db`, :func:`fresh_pg_schema`) are imported as usual.

PostgreSQL (127.0.0.1:5432, database `test`) and Redis (127.0.0.1:6379) must be running; when they
are not, the tests fail with the command that starts them rather than skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from x402gw.ledger import Ledger, MemoryStore

PG_HOST = os.environ.get("X402GW_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("X402GW_TEST_PG_PORT", "5432"))
REDIS_URL = os.environ.get("X402GW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


async def _pg_admin() -> tuple[asyncpg.Connection, str]:
    errors = []
    for user in ("postgres", "root"):
        try:
            conn = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database="test", timeout=10
            )
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{user}: {exc}")
            continue
        return conn, user
    pytest.fail(
        f"PostgreSQL unreachable at {PG_HOST}:{PG_PORT} ({'; '.join(errors)}); start it: {PG_START}",
        pytrace=False,
    )


@dataclass(frozen=True)
class Db:
    """Where a test's ledger lives: a database URL and, on PostgreSQL, a schema of its own; or
    an in-memory store (``url`` is then ``memory``), which every ledger made here shares."""

    url: str
    schema: str | None = None
    store: MemoryStore | None = None

    def ledger(self, **options: Any) -> Ledger:
        """A ledger on this database (not yet migrated)."""
        if self.store is not None:
            return Ledger(self.store, **options)
        return Ledger(self.url, schema=self.schema, **options)


@asynccontextmanager
async def fresh_pg_schema() -> AsyncIterator[Db]:
    """A uniquely named schema in the `test` database, dropped with its tables on exit."""
    admin, user = await _pg_admin()
    schema = f"x402gw_test_{uuid.uuid4().hex[:16]}"
    try:
        yield Db(f"postgresql://{user}@{PG_HOST}:{PG_PORT}/test", schema)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest_asyncio.fixture(loop_scope="function", name="pg_db")
async def fixture_pg_db() -> AsyncIterator[Db]:
    """A fresh PostgreSQL schema, dropped after the test."""
    async with fresh_pg_schema() as db:
        yield db


@pytest.fixture(name="sqlite_url")
def fixture_sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


LEDGER_BACKENDS = ("sqlite", "postgresql", "memory")
"""Every store the ledger's behavioural tests run on; a test that only a database can pass
(several processes, migrations) parametrises ``backend`` with :data:`SQL_BACKENDS`."""
SQL_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=LEDGER_BACKENDS, name="backend")
def fixture_backend(request: pytest.FixtureRequest) -> str:
    """Which store a parametrised ledger test runs on."""
    return str(request.param)


@pytest_asyncio.fixture(loop_scope="function", name="db")
async def fixture_db(backend: str, tmp_path: Path) -> AsyncIterator[Db]:
    """A fresh, empty store of the parametrised backend (SQLite file, PostgreSQL schema or
    memory)."""
    if backend == "sqlite":
        yield Db(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        return
    if backend == "memory":
        yield Db("memory", store=MemoryStore())
        return
    async with fresh_pg_schema() as db:
        yield db


@pytest_asyncio.fixture(loop_scope="function", name="ledger")
async def fixture_ledger(db: Db) -> AsyncIterator[Ledger]:
    """A migrated ledger on a fresh database."""
    async with db.ledger() as instance:
        await instance.migrate()
        yield instance


@pytest_asyncio.fixture(loop_scope="function", name="redis_client")
async def fixture_redis_client() -> AsyncIterator[Redis]:
    """A Redis client; fails clearly when the server is not running."""
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.fail(
            f"Redis unreachable at {REDIS_URL} ({exc}); start it: {REDIS_START}", pytrace=False
        )
    yield client
    await client.aclose()


@pytest.fixture(name="redis_prefix")
def fixture_redis_prefix() -> str:
    """A key prefix unique to this test, so parallel runs never share lock keys."""
    return f"x402gw-test:{uuid.uuid4().hex}:"


@pytest_asyncio.fixture(loop_scope="function", name="clean_redis")
async def fixture_clean_redis(redis_client: Redis, redis_prefix: str) -> AsyncIterator[Redis]:
    """The Redis client; every key under this test's prefix is deleted afterwards."""
    yield redis_client
    keys = [k async for k in redis_client.scan_iter(match=redis_prefix + "*")]
    if keys:
        await redis_client.delete(*keys)
