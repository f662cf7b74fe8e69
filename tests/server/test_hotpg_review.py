"""Review of server.db.hotpg: closing while a statement runs, SQLAlchemy-only URL options, and
the connections of an event loop that ended before close."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import weakref
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from server.db import hotpg
from server.db.engine import Database
from server.db.hotpg import APPLICATION_NAME, DatabaseUnavailable, HotPostgres
from server.db.rawsql import RawStatement

SLEEP = RawStatement("SELECT pg_sleep(?), ?::int")
ONE = RawStatement("SELECT ?::int")


def _sync(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://").split("?", 1)[0]


def _pids(url: str, application: str) -> set[int]:
    with psycopg.connect(_sync(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            (application,),
        ).fetchall()
    return {int(row[0]) for row in rows}


def _running(url: str, application: str) -> bool:
    with psycopg.connect(_sync(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'active' AND query LIKE '%%pg_sleep%%' AND datname = current_database()",
            (application,),
        ).fetchone()
    return bool(row and row[0])


@pytest_asyncio.fixture(loop_scope="function")
async def pg_db(pg_schema: tuple[str, str]) -> AsyncIterator[Database]:
    url, schema = pg_schema
    database = Database(url, schema=schema, hot_connections=2)
    try:
        yield database
    finally:
        await database.dispose()


def _named(db: Database, application: str, size: int = 1) -> HotPostgres:
    assert db.hot is not None
    kwargs = dict(db.hot._connect_kwargs)
    kwargs["server_settings"] = {**kwargs["server_settings"], "application_name": application}
    return HotPostgres(kwargs, size=size)


async def test_close_while_a_statement_runs_lets_it_finish_and_closes_everything(
    pg_db: Database,
) -> None:
    hot = _named(pg_db, "hot-close-busy", size=2)
    assert await hot.first(ONE, (1,)) == (1,)  # an idle connection too
    slow = asyncio.create_task(hot.first(SLEEP, (0.3, 7)))  # e.g. a shielded debit
    for _ in range(500):  # until the server runs it (a bound, not a timing assertion)
        if _running(pg_db.url, "hot-close-busy"):
            break
        await asyncio.sleep(0.01)
    assert _running(pg_db.url, "hot-close-busy")
    await hot.close()  # asyncpg cancels a statement running on a connection it closes
    assert await slow == (None, 7)  # the statement in flight was not cut off
    for _ in range(100):
        if not _pids(pg_db.url, "hot-close-busy"):
            break
        await asyncio.sleep(0.05)
    assert _pids(pg_db.url, "hot-close-busy") == set()


async def test_a_failing_hot_close_still_disposes_the_engine(pg_db: Database) -> None:
    assert pg_db.hot is not None

    async def broken() -> None:
        raise RuntimeError("boom")

    hot, pg_db.hot = pg_db.hot, None
    try:
        pg_db.hot = HotPostgres({}, size=1)
        pg_db.hot.close = broken  # type: ignore[method-assign]
        async with pg_db.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        assert pg_db.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError):
            await pg_db.dispose()
        assert pg_db.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    finally:
        pg_db.hot = hot


async def test_sqlalchemy_only_url_options_do_not_reach_asyncpg(
    pg_schema: tuple[str, str],
) -> None:
    url, schema = pg_schema
    # SQLAlchemy's documented asyncpg URL option (pgbouncer setups set it to 0)
    database = Database(url + "?prepared_statement_cache_size=0", schema=schema)
    try:
        async with database.engine.connect() as conn:  # the engine accepts it
            assert (await conn.exec_driver_sql("SELECT 2")).scalar() == 2
        assert database.hot is not None
        assert await database.hot.first(ONE, (3,)) == (3,)
        assert database.hot._connect_kwargs.get("statement_cache_size") == 0
    finally:
        await database.dispose()


async def test_the_connection_of_a_finished_event_loop_is_not_kept_open(pg_db: Database) -> None:
    hot = _named(pg_db, "hot-old-loop")
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    def other_loop() -> None:
        async def use() -> None:
            loops.append(weakref.ref(asyncio.get_running_loop()))
            assert await hot.first(ONE, (1,)) == (1,)

        asyncio.run(use())

    await asyncio.to_thread(other_loop)
    assert await hot.first(ONE, (2,)) == (2,)  # a loop of its own (the process's next one)
    gc.collect()  # the first loop ended; nothing should keep it (or its connection) alive
    try:
        assert loops[0]() is None
        for _ in range(100):
            if len(_pids(pg_db.url, "hot-old-loop")) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(_pids(pg_db.url, "hot-old-loop")) == 1  # this loop's own
    finally:
        await hot.close()


async def test_default_application_name_is_set(pg_db: Database) -> None:
    assert pg_db.hot is not None
    assert pg_db.hot._connect_kwargs["server_settings"]["application_name"] == APPLICATION_NAME


async def _until_running(url: str, application: str) -> None:
    for _ in range(500):  # a bound, not a timing assertion
        if _running(url, application):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never ran")


async def test_a_call_waiting_for_a_slot_during_close_is_database_unavailable(
    pg_db: Database,
) -> None:
    hot = _named(pg_db, "hot-close-wait", size=1)
    slow = asyncio.create_task(hot.first(SLEEP, (0.3, 7)))
    await _until_running(pg_db.url, "hot-close-wait")
    waiting = asyncio.create_task(hot.first(ONE, (1,), read_only=True))
    await asyncio.sleep(0)  # it queues for the one slot
    await hot.close()
    assert await slow == (None, 7)
    with pytest.raises(DatabaseUnavailable):
        await waiting
    assert hot.connects == 1  # the waiter opened none after close


async def test_close_cuts_off_a_statement_that_outlasts_its_wait(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpg, "CLOSE_TIMEOUT", 0.05)
    hot = _named(pg_db, "hot-close-late", size=1)
    slow = asyncio.create_task(hot.first(SLEEP, (30, 7)))
    await _until_running(pg_db.url, "hot-close-late")
    await hot.close()
    with pytest.raises(DatabaseUnavailable):
        await slow


async def test_a_call_waits_for_a_slot_a_bounded_time(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpg, "SLOT_TIMEOUT", 0.05)
    hot = _named(pg_db, "hot-slot-wait", size=1)
    slow = asyncio.create_task(hot.first(SLEEP, (30, 7)))  # e.g. a debit stuck on a row lock
    try:
        await _until_running(pg_db.url, "hot-slot-wait")
        for read_only in (True, False):
            with pytest.raises(DatabaseUnavailable):
                await asyncio.wait_for(hot.first(ONE, (1,), read_only=read_only), 30)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await hot.first(ONE, (2,)) == (2,)  # one slot, and the timeouts kept none
    finally:
        slow.cancel()
        await hot.close()


async def test_an_unavailable_database_logs_its_cause_without_the_password(
    pg_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    assert pg_db.hot is not None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    kwargs = {**pg_db.hot._connect_kwargs, "port": port, "password": "s3cret-pw"}
    hot = HotPostgres(kwargs, size=1)
    with (
        caplog.at_level(logging.WARNING, logger="server.db.hotpg"),
        pytest.raises(DatabaseUnavailable) as lost,
    ):
        await hot.first(ONE, (1,))
    text = caplog.text
    assert "ConnectionRefusedError" in text or "OSError" in text
    assert str(port) in text
    assert "s3cret" not in text
    assert "s3cret" not in repr(lost.value)
    assert lost.value.__cause__ is None
    await hot.close()
