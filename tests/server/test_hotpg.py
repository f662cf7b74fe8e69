"""The keyed hot path's own asyncpg connections on PostgreSQL: bounded, reused, dropped when they
fail or are cancelled, replaced on the next call, closed with the database; a lost database is a
typed error (503 over HTTP), never a stuck slot."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
import pytest
import pytest_asyncio
from keyed_helpers import keyed_app, keyed_settings

from server.auth.store import AccountStore
from server.billing.credit_rules import EntryKind
from server.billing.credits import CreditStore, InsufficientBalance
from server.db.engine import Database
from server.db.hotpg import APPLICATION_NAME, DatabaseUnavailable, HotPostgres, hot_postgres
from server.db.rawsql import RawStatement
from server.settings import SettingsError, load_settings

SECRET = b"h" * 32
SLEEP = RawStatement("SELECT pg_sleep(?), ?::int")
DIVIDE = RawStatement("SELECT 1 / ?::int")
ECHO = RawStatement("SELECT ?::text, current_setting('search_path')")


def _sync(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _server_pids(url: str, application: str = APPLICATION_NAME) -> set[int]:
    with psycopg.connect(_sync(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = "
            "current_database()",
            (application,),
        ).fetchall()
    return {int(row[0]) for row in rows}


def _active(url: str, application: str) -> bool:
    with psycopg.connect(_sync(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'active' AND query LIKE '%%pg_sleep%%'",
            (application,),
        ).fetchone()
    return bool(row and row[0])


def _terminate(url: str, pids: set[int]) -> None:
    with psycopg.connect(_sync(url), autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture(loop_scope="function")
async def pg_db(pg_schema: tuple[str, str]) -> AsyncIterator[Database]:
    url, schema = pg_schema
    database = Database(url, schema=schema, hot_connections=2)
    await database.migrate()
    try:
        yield database
    finally:
        await database.dispose()


def _hot(db: Database, application: str) -> HotPostgres:
    """A separate hot set on ``db``'s server, named ``application`` in pg_stat_activity."""
    assert db.hot is not None
    base = dict(db.hot._connect_kwargs)
    base["server_settings"] = {**base["server_settings"], "application_name": application}
    return HotPostgres(base, size=1)


async def test_the_key_lookup_and_the_debit_run_on_the_hot_connections(pg_db: Database) -> None:
    hot = hot_postgres(pg_db.engine)
    assert hot is pg_db.hot
    assert hot is not None
    accounts = AccountStore(pg_db.engine, SECRET)
    user, _ = await accounts.user_for_subject("s", email=None, plan="paid")
    raw, _ = await accounts.create_key(user.id, "k", ("*",))
    credits = CreditStore(pg_db.engine)
    await credits.add(user.id, 3, kind=EntryKind.GRANT, reference="g", operation=None)
    before = hot.connects
    match = await accounts.authenticate(raw)
    assert match is not None
    assert match.user.id == user.id
    assert match.available_credits == 3
    assert await credits.debit(user.id, 2, operation="email.validate", reference="r1") == 1
    with pytest.raises(InsufficientBalance) as short:  # the refusal reads the balance, hot too
        await credits.debit(user.id, 2, operation="email.validate")
    assert short.value.available == 1
    assert hot.connects - before >= 1
    # the debit landed in this test's schema (search_path passed on), seen by the main pool
    assert (await credits.balance(user.id)).balance == 1
    assert next(e.reference for e in await credits.entries(user.id, limit=5)) == "r1"
    assert _server_pids(pg_db.url) & {c.get_server_pid() for c in _opened(hot)}


def _opened(hot: HotPostgres) -> set[Any]:
    return {conn for state in hot._loops.values() for conn in state.opened}


async def test_no_more_than_size_connections_open_under_concurrency(pg_db: Database) -> None:
    hot = HotPostgres({**_hot(pg_db, "hot-size")._connect_kwargs}, size=2)
    try:
        rows = await asyncio.gather(*(hot.first(SLEEP, (0.02, n)) for n in range(10)))
        assert sorted(row[1] for row in rows if row is not None) == list(range(10))
        assert hot.connects == 2
        assert len(_server_pids(pg_db.url, "hot-size")) == 2
    finally:
        await hot.close()
    assert _server_pids(pg_db.url, "hot-size") == set()


async def test_the_search_path_and_name_reach_the_server(pg_db: Database) -> None:
    assert pg_db.hot is not None
    row = await pg_db.hot.first(ECHO, ("x",))
    assert row is not None
    assert row[0] == "x"
    assert pg_db.schema in row[1]
    assert len(_server_pids(pg_db.url)) >= 1


async def test_a_statement_error_keeps_the_connection(pg_db: Database) -> None:
    hot = _hot(pg_db, "hot-error")
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await hot.first(DIVIDE, (0,))
        assert await hot.first(DIVIDE, (1,)) == (1,)
        assert (hot.connects, hot.dropped) == (1, 0)
    finally:
        await hot.close()


async def test_a_cancelled_statement_drops_its_connection_and_frees_its_slot(
    pg_db: Database,
) -> None:
    hot = _hot(pg_db, "hot-cancel")  # one slot: a slot kept by the cancelled call would hang
    try:
        slow = asyncio.create_task(hot.first(SLEEP, (30, 1)))
        for _ in range(500):  # until the server runs it (a bound, not a timing assertion)
            if _active(pg_db.url, "hot-cancel"):
                break
            await asyncio.sleep(0.01)
        assert _active(pg_db.url, "hot-cancel")
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert hot.dropped == 1
        assert await asyncio.wait_for(hot.first(DIVIDE, (1,)), 10) == (1,)
        assert hot.connects == 2
    finally:
        await hot.close()


async def test_a_lost_connection_is_retried_for_a_read_and_reported_for_a_write(
    pg_db: Database,
) -> None:
    hot = _hot(pg_db, "hot-lost")
    try:
        assert await hot.first(DIVIDE, (1,)) == (1,)
        _terminate(pg_db.url, _server_pids(pg_db.url, "hot-lost"))
        assert await hot.first(DIVIDE, (1,), read_only=True) == (1,)  # a new connection
        assert hot.connects == 2
        _terminate(pg_db.url, _server_pids(pg_db.url, "hot-lost"))
        with pytest.raises(DatabaseUnavailable):  # a write may have committed: not retried
            await hot.first(DIVIDE, (1,))
        assert await hot.first(DIVIDE, (1,)) == (1,)  # and the next call reconnects
        assert hot.connects == 3
    finally:
        await hot.close()


async def test_an_unreachable_database_is_database_unavailable(pg_db: Database) -> None:
    kwargs = dict(_hot(pg_db, "hot-dead")._connect_kwargs)
    kwargs["port"] = _dead_port()
    hot = HotPostgres(kwargs, size=1)
    for read_only in (True, False, True):  # the one slot comes back after each failure
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(hot.first(DIVIDE, (1,), read_only=read_only), 30)
    assert hot.connects == 0
    await hot.close()


async def test_connections_of_another_event_loop_are_terminated_on_close(
    pg_db: Database,
) -> None:
    hot = _hot(pg_db, "hot-loops")

    def other_loop() -> None:
        async def use() -> None:
            assert await hot.first(DIVIDE, (1,)) == (1,)

        asyncio.run(use())

    await asyncio.to_thread(other_loop)
    assert await hot.first(DIVIDE, (1,)) == (1,)
    assert hot.connects == 2  # one per loop
    await hot.close()
    gc.collect()  # the other loop is closed: its connection goes with it
    for _ in range(100):
        if not _server_pids(pg_db.url, "hot-loops"):
            break
        await asyncio.sleep(0.05)
    assert _server_pids(pg_db.url, "hot-loops") == set()


async def test_zero_hot_connections_uses_the_pool(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    database = Database(url, schema=schema, hot_connections=0)
    try:
        await database.migrate()
        assert database.hot is None
        assert hot_postgres(database.engine) is None
        accounts = AccountStore(database.engine, SECRET)
        user, _ = await accounts.user_for_subject("s", email=None, plan="paid")
        raw, _ = await accounts.create_key(user.id, "k", ("*",))
        assert await accounts.authenticate(raw) is not None
        credits = CreditStore(database.engine)
        await credits.add(user.id, 1, kind=EntryKind.GRANT, reference="g", operation=None)
        assert await credits.debit(user.id, 1, operation="email.validate") == 0
    finally:
        await database.dispose()


def test_sqlite_has_no_hot_connections(sqlite_url: str) -> None:
    assert Database(sqlite_url, hot_connections=4).hot is None


@pytest.mark.parametrize(
    ("value", "why"), [("-1", "greater than or equal to 0"), ("65", "less"), ("many", "integer")]
)
def test_a_bad_hot_connection_count_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    monkeypatch.setenv("BAVLIO_DATABASE_HOT_CONNECTIONS", value)
    with pytest.raises(SettingsError, match=f"BAVLIO_DATABASE_HOT_CONNECTIONS: .*{why}"):
        load_settings(env_file=None)


async def test_a_keyed_call_answers_503_and_charges_nothing_when_the_database_is_lost(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_schema
    base = load_settings(env_file=None, database_url=url, database_schema=schema)
    async with keyed_app(keyed_settings(base, tmp_path)) as app:
        _, session = await app.user(credits=5)
        key = await app.key(session)
        body = {"email": "jane@acme.test"}
        path = "/api/v1/email-verification/validate"
        ok = await app.client.post(path, json=body, headers=key)
        assert ok.status_code == 200, ok.text
        hot = app.services.db.hot
        assert hot is not None
        live = dict(hot._connect_kwargs)
        hot._connect_kwargs["port"] = _dead_port()
        _terminate(url, _server_pids(url))
        lost = await app.client.post(path, json=body, headers=key)
        assert lost.status_code == 503
        error = lost.json()["error"]
        assert error["code"] == "database_unavailable"
        assert lost.headers["Retry-After"] == "1"
        assert lost.headers["X-Request-Id"] == error["request_id"]
        for secret in (str(live["port"]), str(hot._connect_kwargs["port"]), "127.0.0.1"):
            assert secret not in lost.text
        hot._connect_kwargs.update(port=live["port"])
        again = await app.client.post(path, json=body, headers=key)
        assert again.status_code == 200, again.text
        balance = await app.client.get("/api/v1/credits/balance", headers=key)
        assert balance.status_code == 200, balance.text
        assert balance.json()["total_credits"] == 3  # two delivered calls, two debits
