"""The keyed hot path's own asyncpg connections on PostgreSQL: bounded, reused, dropped when they
fail or are cancelled, replaced on the next call, closed with the database; a lost database is a
typed error (503 over HTTP), never a stuck slot."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import weakref
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
from server.db import hotpg
from server.db.engine import Database
from server.db.hotpg import (
    APPLICATION_NAME,
    DatabaseUnavailable,
    HotPostgres,
    OutcomeUnknown,
    hot_postgres,
)
from server.db.rawsql import RawStatement
from server.settings import SettingsError, load_settings

SECRET = b"h" * 32
SLEEP = RawStatement("SELECT pg_sleep(?), ?::int")
ONE = RawStatement("SELECT ?::int")
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
            "AND state = 'active' AND query LIKE '%%pg_sleep%%' AND datname = current_database()",
            (application,),
        ).fetchone()
    return bool(row and row[0])


async def _until_running(url: str, application: str) -> None:
    """Wait until ``application`` runs a pg_sleep on the server (a bound, not a timing check)."""
    for _ in range(500):
        if _active(url, application):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never ran")


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


def _hot(db: Database, application: str, size: int = 1) -> HotPostgres:
    """A separate hot set on ``db``'s server, named ``application`` in pg_stat_activity."""
    assert db.hot is not None
    base = dict(db.hot._connect_kwargs)
    base["server_settings"] = {**base["server_settings"], "application_name": application}
    return HotPostgres(base, size=size)


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
        await _until_running(pg_db.url, "hot-cancel")
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


class _LosesTheAnswer:
    """An asyncpg connection whose next debit runs (``after=True``) or not, then is lost."""

    def __init__(self, conn: Any, *, after: bool) -> None:
        self._conn = conn
        self._after = after
        self.tripped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchrow(self, sql: str, *args: Any, **options: Any) -> Any:
        if "INSERT INTO credit_entries" in sql and not self.tripped:
            self.tripped = True
            if self._after:
                await self._conn.fetchrow(sql, *args)  # committed: only the answer is lost
            self._conn.terminate()
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")
        return await self._conn.fetchrow(sql, *args, **options)


@pytest.mark.parametrize("committed", [True, False])
async def test_a_debit_whose_answer_is_lost_is_read_back(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """Booked before the connection was lost: the debit stands (once) and the work is delivered;
    not booked: DatabaseUnavailable and nothing taken."""
    accounts = AccountStore(pg_db.engine, SECRET)
    user, _ = await accounts.user_for_subject("s", email=None, plan="paid")
    credits = CreditStore(pg_db.engine)
    await credits.add(user.id, 5, kind=EntryKind.GRANT, reference="g", operation=None)
    assert pg_db.hot is not None
    await pg_db.hot.close()  # the next call opens a connection through the patched connect
    real_connect = asyncpg.connect
    wrappers: list[_LosesTheAnswer] = []

    async def connect(**kwargs: Any) -> _LosesTheAnswer:
        wrapper = _LosesTheAnswer(await real_connect(**kwargs), after=committed)
        wrappers.append(wrapper)
        return wrapper

    monkeypatch.setattr(asyncpg, "connect", connect)  # as hotpg calls it
    if committed:
        assert await credits.debit(user.id, 2, operation="email.validate", reference="r") == 3
    else:
        with pytest.raises(DatabaseUnavailable):
            await credits.debit(user.id, 2, operation="email.validate", reference="r")
    assert wrappers[0].tripped
    position = await credits.balance(user.id)
    assert position.balance == (3 if committed else 5)
    debits = [e for e in await credits.entries(user.id, limit=10) if e.kind is EntryKind.DEBIT]
    assert [e.reference for e in debits] == (["r"] if committed else [])


# --- close, slot waits, URL options, ended loops, logged causes ---------------------------


async def test_close_while_a_statement_runs_lets_it_finish_and_closes_everything(
    pg_db: Database,
) -> None:
    hot = _hot(pg_db, "hot-close-busy", size=2)
    assert await hot.first(ONE, (1,)) == (1,)  # an idle connection too
    slow = asyncio.create_task(hot.first(SLEEP, (0.3, 7)))  # e.g. a shielded debit
    for _ in range(500):  # until the server runs it (a bound, not a timing assertion)
        if _active(pg_db.url, "hot-close-busy"):
            break
        await asyncio.sleep(0.01)
    assert _active(pg_db.url, "hot-close-busy")
    await hot.close()  # asyncpg cancels a statement running on a connection it closes
    assert await slow == (None, 7)  # the statement in flight was not cut off
    for _ in range(100):
        if not _server_pids(pg_db.url, "hot-close-busy"):
            break
        await asyncio.sleep(0.05)
    assert _server_pids(pg_db.url, "hot-close-busy") == set()


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
    hot = _hot(pg_db, "hot-old-loop")
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
            if len(_server_pids(pg_db.url, "hot-old-loop")) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(_server_pids(pg_db.url, "hot-old-loop")) == 1  # this loop's own
    finally:
        await hot.close()


async def test_default_application_name_is_set(pg_db: Database) -> None:
    assert pg_db.hot is not None
    assert pg_db.hot._connect_kwargs["server_settings"]["application_name"] == APPLICATION_NAME


async def _until_active(url: str, application: str) -> None:
    for _ in range(500):  # a bound, not a timing assertion
        if _active(url, application):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never ran")


async def test_a_call_waiting_for_a_slot_during_close_is_database_unavailable(
    pg_db: Database,
) -> None:
    hot = _hot(pg_db, "hot-close-wait", size=1)
    slow = asyncio.create_task(hot.first(SLEEP, (0.3, 7)))
    await _until_active(pg_db.url, "hot-close-wait")
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
    hot = _hot(pg_db, "hot-close-late", size=1)
    slow = asyncio.create_task(hot.first(SLEEP, (30, 7)))
    await _until_active(pg_db.url, "hot-close-late")
    await hot.close()
    with pytest.raises(DatabaseUnavailable):
        await slow


async def test_a_call_waits_for_a_slot_a_bounded_time(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpg, "SLOT_TIMEOUT", 0.05)
    hot = _hot(pg_db, "hot-slot-wait", size=1)
    slow = asyncio.create_task(hot.first(SLEEP, (30, 7)))  # e.g. a debit stuck on a row lock
    try:
        await _until_active(pg_db.url, "hot-slot-wait")
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
    port = _dead_port()
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


class _GivesUpWhileBlocked:
    """An asyncpg connection whose next debit is sent, then abandoned (the socket closed) while
    its server process waits on a row lock: that process would commit once the lock is freed."""

    def __init__(self, conn: Any, url: str) -> None:
        self._conn = conn
        self._url = url
        self.tripped = False
        self.pid = conn.get_server_pid()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchrow(self, sql: str, *args: Any, **options: Any) -> Any:
        if "INSERT INTO credit_entries" in sql and not self.tripped:
            self.tripped = True
            pid = self.pid
            running = asyncio.ensure_future(self._conn.fetchrow(sql, *args))
            for _ in range(500):  # until the server process waits on the lock (a bound)
                if _waits_on_a_lock(self._url, pid):
                    break
                await asyncio.sleep(0.01)
            assert _waits_on_a_lock(self._url, pid)
            self._conn.terminate()
            with contextlib.suppress(BaseException):
                await running
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")
        return await self._conn.fetchrow(sql, *args, **options)


def _waits_on_a_lock(url: str, pid: int) -> bool:
    with psycopg.connect(_sync(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return bool(row and row[0] == "Lock")


def _gone(url: str, pid: int) -> bool:
    with psycopg.connect(_sync(url), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        return bool(row.fetchone() == (0,))


async def test_a_lost_debit_still_running_on_the_server_is_ended_before_the_read_back(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lost debit's server process is blocked on the account row: it is terminated before
    the read-back, so it can never commit after the caller was answered 503 (charged for work
    not delivered)."""
    accounts = AccountStore(pg_db.engine, SECRET)
    user, _ = await accounts.user_for_subject("s", email=None, plan="paid")
    credits = CreditStore(pg_db.engine)
    await credits.add(user.id, 5, kind=EntryKind.GRANT, reference="g", operation=None)
    assert pg_db.hot is not None
    await pg_db.hot.close()
    real_connect = asyncpg.connect
    wrappers: list[_GivesUpWhileBlocked] = []

    async def connect(**kwargs: Any) -> _GivesUpWhileBlocked:
        wrapper = _GivesUpWhileBlocked(await real_connect(**kwargs), pg_db.url)
        wrappers.append(wrapper)
        return wrapper

    monkeypatch.setattr(asyncpg, "connect", connect)
    holder = await psycopg.AsyncConnection.connect(_sync(pg_db.url))
    try:
        await holder.execute(f"SET search_path TO {pg_db.schema}")
        await holder.execute(
            "SELECT balance FROM credit_accounts WHERE user_id = %s FOR UPDATE", (user.id,)
        )  # another transaction holds the account row
        with pytest.raises(DatabaseUnavailable):
            await credits.debit(user.id, 2, operation="email.validate", reference="r")
        blocked = wrappers[0].pid
        assert wrappers[0].tripped
        assert _gone(pg_db.url, blocked)  # ended before the caller was answered
    finally:
        await holder.commit()  # the lock is freed: a surviving debit would commit now
        await holder.close()
    position = await credits.balance(user.id)
    assert position.balance == 5
    debits = [e for e in await credits.entries(user.id, limit=10) if e.kind is EntryKind.DEBIT]
    assert debits == []


async def test_ending_a_lost_write_that_is_gone_or_unreachable(pg_db: Database) -> None:
    hot = _hot(pg_db, "hot-end")
    try:
        assert await hot.end(OutcomeUnknown(2**31 - 1, None))  # no such process: gone
        assert await hot.first(ONE, (1,)) == (1,)
        own = next(iter(_opened(hot))).get_server_pid()
        started = hot._started[own]
        assert await hot.end(OutcomeUnknown(own, None)) is True  # the start time unknown: pid
        assert _gone(pg_db.url, own)
        assert await hot.end(OutcomeUnknown(own, started))  # a process of that start is gone
    finally:
        await hot.close()
    kwargs = {**hot._connect_kwargs, "port": _dead_port()}
    unreachable = HotPostgres(kwargs, size=1)
    assert await unreachable.end(OutcomeUnknown(1, None)) is False  # not sure: said so
    await unreachable.close()


async def test_a_statement_past_its_timeout_is_cut_off_and_its_slot_freed(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpg, "STATEMENT_TIMEOUT", 0.2)
    hot = _hot(pg_db, "hot-timeout")
    try:
        with pytest.raises(DatabaseUnavailable) as read:  # tried twice, then refused
            await hot.first(SLEEP, (30, 1), read_only=True)
        assert not isinstance(read.value, OutcomeUnknown)
        assert hot.connects == 2
        with pytest.raises(OutcomeUnknown):  # a write's outcome is unknown
            await hot.first(SLEEP, (30, 1))
        assert await asyncio.wait_for(hot.first(ONE, (5,)), 10) == (5,)  # the one slot is back
    finally:
        await hot.close()


async def test_a_debit_stuck_on_a_lock_past_its_timeout_is_not_charged(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpg, "STATEMENT_TIMEOUT", 0.3)
    accounts = AccountStore(pg_db.engine, SECRET)
    user, _ = await accounts.user_for_subject("s", email=None, plan="paid")
    credits = CreditStore(pg_db.engine)
    await credits.add(user.id, 5, kind=EntryKind.GRANT, reference="g", operation=None)
    holder = await psycopg.AsyncConnection.connect(_sync(pg_db.url))
    try:
        await holder.execute(f"SET search_path TO {pg_db.schema}")
        await holder.execute(
            "SELECT balance FROM credit_accounts WHERE user_id = %s FOR UPDATE", (user.id,)
        )
        with pytest.raises(DatabaseUnavailable):
            await credits.debit(user.id, 2, operation="email.validate", reference="r")
    finally:
        await holder.commit()
        await holder.close()
    assert (await credits.balance(user.id)).balance == 5
    assert await credits.debit(user.id, 2, operation="email.validate", reference="r2") == 3
