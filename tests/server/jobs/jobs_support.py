"""Fixtures and helpers of the job tests, imported by each test module (a conftest.py here
would shadow tests/server/conftest.py for the modules that ``from conftest import ...``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from server.db.engine import Database
from server.jobs import JobContext, JobItem, JobQueue, JobState


@dataclass
class Clock:
    """A clock the test moves by hand (lease expiry without waiting)."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(name="db_url")
def db_url_fixture(backend: str, request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(database URL, schema): a SQLite file, or a PostgreSQL database of its own already at head,
    per ``backend`` (tests/lab/ledgerdb.py's parametrised fixture, which also marks the PostgreSQL
    runs lab)."""
    if backend == "sqlite":
        return request.getfixturevalue("sqlite_url"), None
    url, schema = request.getfixturevalue("pg_migrated")
    return url, schema


@pytest_asyncio.fixture(name="db", loop_scope="function")
async def db_fixture(db_url: tuple[str, str | None]) -> AsyncIterator[Database]:
    """A migrated database on each backend."""
    database = Database(db_url[0], schema=db_url[1])
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    """A hand-moved clock."""
    return Clock()


@pytest.fixture(name="queue")
def queue_fixture(db: Database, clock: Clock) -> JobQueue:
    """A queue on the hand-moved clock with an ``echo`` kind and an ``rows`` item kind."""
    q = JobQueue(db, clock=clock)

    async def echo(ctx: JobContext) -> Any:
        return {"echo": ctx.payload}

    async def row(ctx: JobContext, item: JobItem) -> Any:
        return {"seen": item.input}

    q.register("echo", echo)
    q.register("rows", item_handler=row)
    return q


async def eventually(check: Callable[[], Awaitable[bool]], what: str, tries: int = 1500) -> None:
    """Poll ``check`` until it is true (a guard against hanging, not a timing assertion)."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def state_of(queue: JobQueue, owner: str, job_id: str) -> JobState:
    """The job's current state."""
    job = await queue.get(owner, job_id)
    assert job is not None
    return job.state
