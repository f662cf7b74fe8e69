"""The SQLite ledger's write path: what it writes reads back the same through the engine, its
errors are the ledger's, and its driver thread never keeps a process alive."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_cases import (
    check_duplicate_and_reopen,
    check_round_trip,
    check_two_event_loops,
    check_unclosed_ledger_exits,
    payment,
)

from x402gw.ledger import Ledger, LedgerUnavailable, State, _sqlite, _statements

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _migrated(path: Path) -> Iterator[tuple[asyncio.Runner, Ledger]]:
    """A migrated ledger at ``path``, and the runner whose loop made it."""
    with asyncio.Runner() as runner:
        ledger = Ledger(path)
        runner.run(ledger.migrate())
        try:
            yield runner, ledger
        finally:
            runner.run(ledger.close())


def test_what_the_writer_writes_the_engine_reads_back(tmp_path: Path) -> None:
    with _migrated(tmp_path / "rt.sqlite3") as (runner, ledger):
        check_round_trip(runner, ledger)


def test_writes_use_the_engines_sql_text(tmp_path: Path) -> None:
    statement, _ = _statements.transition_query(
        "x", from_states=[State.VERIFIED, State.SETTLING], tx_hash="0x" + "ab" * 32, values={}
    )
    plan = _sqlite.compiled(statement)
    assert plan.text.startswith("UPDATE x402gw_payments SET")
    assert "IN ('verified', 'settling')" in plan.text
    assert [name for name, _ in plan.params] == ["p_id", "p_tx_hash"]
    assert _sqlite.compiled(statement) is plan  # compiled once


async def test_duplicate_and_reopen_after_close(tmp_path: Path) -> None:
    await check_duplicate_and_reopen(Ledger(tmp_path / "dup.sqlite3"))


async def test_database_gone_bad_is_ledger_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    ledger = Ledger(path)
    await ledger.migrate()
    await ledger.close()
    for leftover in path.parent.glob("bad.sqlite3*"):
        leftover.unlink()
    path.write_bytes(b"not a database at all" * 200)
    with pytest.raises(LedgerUnavailable):
        await ledger.reserve(**payment())
    await ledger.close()


def test_an_unclosed_ledger_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    check_unclosed_ledger_exits("sqlite:///" + str(tmp_path / "open.sqlite3"))


def test_one_ledger_from_two_event_loops(tmp_path: Path) -> None:
    with _migrated(tmp_path / "loops.sqlite3") as (runner, ledger):
        check_two_event_loops(runner, ledger)


MIGRATE = """
import asyncio, os, sys, time
sys.path.insert(0, sys.argv[3])
from x402gw.ledger import Ledger

async def main() -> None:
    print("ready", flush=True)
    while not os.path.exists(sys.argv[2]):  # start together
        time.sleep(0.001)
    ledger = Ledger("sqlite:///" + sys.argv[1])
    try:
        print(await ledger.migrate())
    finally:
        await ledger.close()

asyncio.run(main())
"""


def test_processes_starting_together_migrate_one_fresh_file(tmp_path: Path) -> None:
    """Worker processes on one new ledger file: each migrates at start, and every one succeeds
    (the write lock is taken before the version table is read; WAL waits for the busy lock)."""
    db, go = tmp_path / "fresh.sqlite3", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, str(db), str(go), str(ROOT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for proc in procs:  # every one imported and waiting for the signal
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-500:]
        assert out.strip() == "0002_signature_hash"


async def test_migrate_tries_again_when_sqlite_says_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A "database is locked" the busy timeout did not cover is retried; other errors are not."""
    import sqlalchemy as sa

    real = _statements.upgrade_to_head
    failures = {"locked": 1}

    def flaky(connection: Any, schema: str | None = None) -> None:
        if failures["locked"]:
            failures["locked"] -= 1
            raise sa.exc.OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        real(connection, schema)

    monkeypatch.setattr(_statements, "upgrade_to_head", flaky)
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        assert await ledger.migrate() == "0002_signature_hash"
        assert failures["locked"] == 0

        def broken(connection: Any, schema: str | None = None) -> None:
            raise sa.exc.OperationalError("CREATE", {}, Exception("disk I/O error"))

        monkeypatch.setattr(_statements, "upgrade_to_head", broken)
        with pytest.raises(LedgerUnavailable, match="disk I/O error"):
            await ledger.migrate()
    finally:
        await ledger.close()
