"""Fixtures of the job tests: a migrated database on each backend, a queue on a hand-moved clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from jobs_support import Clock

from server.db.engine import Database
from server.jobs import JobContext, JobItem, JobQueue


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(database URL, schema) on SQLite, then on PostgreSQL in a fresh schema."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url"), None
    url, schema = request.getfixturevalue("pg_schema")
    return url, schema


@pytest_asyncio.fixture(loop_scope="function")
async def db(db_url: tuple[str, str | None]) -> AsyncIterator[Database]:
    """A migrated database on each backend."""
    database = Database(db_url[0], schema=db_url[1])
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> Clock:
    """A hand-moved clock."""
    return Clock()


@pytest.fixture
def queue(db: Database, clock: Clock) -> JobQueue:
    """A queue on the hand-moved clock with an ``echo`` kind and an ``rows`` item kind."""
    q = JobQueue(db, clock=clock)

    async def echo(ctx: JobContext) -> Any:
        return {"echo": ctx.payload}

    async def row(ctx: JobContext, item: JobItem) -> Any:
        return {"seen": item.input}

    q.register("echo", echo)
    q.register("rows", item_handler=row)
    return q
