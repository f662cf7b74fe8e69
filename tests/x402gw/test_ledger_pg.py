"""The PostgreSQL ledger's write path: what it writes reads back the same through the engine, its
errors are the ledger's, it recovers when the database comes back, and it never keeps a process
alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from lab.ledgerdb import PG_PORT, fresh_pg_schema
from lab.webserver import free_port
from ledger_cases import (
    check_duplicate_and_reopen,
    check_round_trip,
    check_two_event_loops,
    check_unclosed_ledger_exits,
    payment,
)
from paylab import proxy_to

from x402gw.ledger import Ledger, LedgerUnavailable, State, _postgres, _statements


@contextlib.contextmanager
def _migrated() -> Iterator[tuple[asyncio.Runner, Ledger]]:
    """A migrated ledger in a fresh schema, and the runner whose loop made it."""
    with asyncio.Runner() as runner:
        schema = fresh_pg_schema()
        db = runner.run(schema.__aenter__())
        ledger = db.ledger()
        try:
            runner.run(ledger.migrate())
            yield runner, ledger
        finally:
            runner.run(ledger.close())
            runner.run(schema.__aexit__(None, None, None))


@pytest.mark.lab
def test_what_the_writer_writes_the_engine_reads_back() -> None:
    with _migrated() as (runner, ledger):
        check_round_trip(runner, ledger, nul=False)


def test_writes_use_the_engines_sql_text() -> None:
    statement, _ = _statements.transition_query(
        "x",
        from_states=[State.VERIFIED, State.SETTLING],
        tx_hash="0x" + "ab" * 32,
        values={"state": "settled"},
    )
    plan = _postgres.compiled(statement)
    assert plan.text.startswith("UPDATE x402gw_payments SET state=$1::VARCHAR WHERE")
    assert "x402gw_payments.id = $2::VARCHAR" in plan.text
    assert "IN ('verified', 'settling')" in plan.text
    assert [name for name, _ in plan.params] == ["v_state", "p_id", "p_tx_hash"]
    assert _postgres.compiled(statement) is plan  # compiled once


def test_connect_args_from_the_engine_url() -> None:
    url = _statements.async_url("postgresql://alice:s%40cret@db.example:6543/pay")
    assert _postgres.connect_args(url, "ledger") == {
        "host": "db.example",
        "port": 6543,
        "user": "alice",
        "password": "s@cret",
        "database": "pay",
        "server_settings": {"search_path": "ledger"},
    }
    assert "server_settings" not in _postgres.connect_args(url, None)


@pytest.mark.lab
async def test_duplicate_and_reopen_after_close() -> None:
    async with fresh_pg_schema() as db:
        await check_duplicate_and_reopen(db.ledger())


@pytest.mark.lab
async def test_postgresql_unreachable_is_ledger_unavailable() -> None:
    async with fresh_pg_schema() as db:
        ledger = Ledger(db.url.replace(f":{PG_PORT}/", f":{free_port()}/"), schema=db.schema)
        with pytest.raises(LedgerUnavailable):
            await ledger.reserve(**payment())
        with pytest.raises(LedgerUnavailable):  # and again: nothing is stuck
            await ledger.reserve(**payment())
        await ledger.close()


@pytest.mark.lab
async def test_connection_cut_then_restored() -> None:
    async with fresh_pg_schema() as db, contextlib.AsyncExitStack() as stack:
        proxy = stack.enter_context(proxy_to(PG_PORT))
        ledger = Ledger(db.url.replace(f":{PG_PORT}/", f":{proxy.port}/"), schema=db.schema)
        stack.push_async_callback(ledger.close)
        await ledger.migrate()
        # Several pooled connections, all cut at once.
        await asyncio.gather(*(ledger.reserve(**payment()) for _ in range(5)))
        await asyncio.to_thread(proxy.close)
        with pytest.raises(LedgerUnavailable):
            await ledger.reserve(**payment())
        await asyncio.to_thread(proxy.open)
        for _ in range(6):  # every stale connection is replaced: no write fails
            record = await ledger.reserve(**payment())
            assert (await ledger.mark_settling(record.id)).state is State.SETTLING
        assert (await ledger.get(record.id)).state is State.SETTLING


@pytest.mark.lab
async def test_an_unclosed_ledger_does_not_keep_the_process_alive() -> None:
    async with fresh_pg_schema() as db:
        await asyncio.to_thread(check_unclosed_ledger_exits, db.url, db.schema)


@pytest.mark.lab
def test_one_ledger_from_two_event_loops() -> None:
    """asyncpg connections belong to their loop: a ledger used from a second loop (a second
    test client, a CLI calling asyncio.run twice) gets a pool of its own there, and the first
    loop's pool keeps working."""
    with _migrated() as (runner, ledger):
        check_two_event_loops(runner, ledger)
