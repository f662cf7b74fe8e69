"""The keyed hot path's inline SQLite connection: it never waits on the event loop (a lock held
elsewhere sends the call to the pooled path, which waits), keeps the ledger exact, checkpoints the
WAL off the loop, and is used only for SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from server.auth.store import AccountStore
from server.billing.credit_rules import EntryKind
from server.billing.credits import CreditStore, InsufficientBalance
from server.db.engine import Database
from server.db.rawsql import Busy, InlineSqlite, RawStatement, inline_sqlite

SECRET = b"k" * 32


async def _funded(db: Database, credits: int) -> tuple[CreditStore, str]:
    user, _ = await AccountStore(db.engine, SECRET).user_for_subject("s", email=None, plan="paid")
    store = CreditStore(db.engine)
    await store.add(user.id, credits, kind=EntryKind.GRANT, reference="g", operation=None)
    return store, user.id


@pytest_asyncio.fixture(loop_scope="function")
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_debit_waits_for_another_writer_without_blocking_the_loop(
    sqlite_db: Database, tmp_path: Path
) -> None:
    credits, user = await _funded(sqlite_db, 3)
    assert inline_sqlite(sqlite_db.engine) is not None
    other = sqlite3.connect(tmp_path / "bavlio.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock
    try:
        debit = asyncio.create_task(credits.debit(user, 1, operation="email.validate"))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the debit waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20
        assert not debit.done()
    finally:
        other.execute("COMMIT")
        other.close()
    assert await debit == 2
    assert (await credits.balance(user)).balance == 2
    lines = await credits.entries(user, limit=10, operation="email.validate")
    assert [(e.amount, e.balance_after) for e in lines] == [(-1, 2)]


async def test_inline_debits_stay_exact_and_refuse_an_overdraw(sqlite_db: Database) -> None:
    credits, user = await _funded(sqlite_db, 5)

    async def one() -> int | InsufficientBalance:
        try:
            return await credits.debit(user, 2, operation="x")
        except InsufficientBalance as exc:
            return exc

    results = await asyncio.gather(*(one() for _ in range(6)))
    assert sorted(r for r in results if isinstance(r, int)) == [1, 3]
    assert sum(isinstance(r, InsufficientBalance) for r in results) == 4
    position = await credits.balance(user)
    assert (position.balance, position.used) == (1, 4)


async def test_the_wal_is_checkpointed_off_the_loop(sqlite_db: Database) -> None:
    credits, user = await _funded(sqlite_db, 100)
    inline = inline_sqlite(sqlite_db.engine)
    assert inline is not None
    inline.checkpoint_every = 5
    for _ in range(10):
        await credits.debit(user, 1, operation="x")
    for _ in range(100):  # the checkpoint runs in a thread: wait for it
        if inline.checkpoints >= 2:
            break
        await asyncio.sleep(0.02)
    assert inline.checkpoints >= 1
    assert (await credits.balance(user)).balance == 90


def test_a_locked_database_is_busy_not_a_wait(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (v INTEGER)")
    setup.execute("BEGIN IMMEDIATE")
    inline = InlineSqlite(str(path))
    try:
        with pytest.raises(Busy), inline.immediate():
            pass
        assert inline.first(RawStatement("SELECT count(*) FROM t"), ()) == (0,)  # WAL: reads go on
    finally:
        setup.execute("COMMIT")
        setup.close()
    with inline.immediate() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert inline.first(RawStatement("SELECT v FROM t WHERE v = ?"), (1,)) == (1,)
    inline.close()


def test_a_database_not_in_wal_mode_is_left_to_the_pool(tmp_path: Path) -> None:
    path = tmp_path / "rollback.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (v INTEGER)").connection.close()
    inline = InlineSqlite(str(path))
    with pytest.raises(Busy):  # a reader could wait on a writer there
        inline.first(RawStatement("SELECT 1"), ())
    with pytest.raises(Busy):  # and it does not reopen at once
        inline.first(RawStatement("SELECT 1"), ())


async def test_only_sqlite_files_get_an_inline_connection(pg_schema: tuple[str, str]) -> None:
    memory = Database("sqlite+aiosqlite:///:memory:")
    url, schema = pg_schema
    postgres = Database(url, schema=schema)
    try:
        assert inline_sqlite(memory.engine) is None
        assert inline_sqlite(postgres.engine) is None
    finally:
        await memory.dispose()
        await postgres.dispose()
