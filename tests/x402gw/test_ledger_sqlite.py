"""The SQLite ledger's write path: what it writes reads back the same through the engine, its
errors are the ledger's, and its driver thread never keeps a process alive."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x402gw import _ledger_sql, _ledger_sqlite
from x402gw.ledger import AuthorizationInUse, Ledger, LedgerUnavailable, State, request_fingerprint

ROOT = Path(__file__).resolve().parents[2]
PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
MERCHANT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def _payment(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "scheme": "exact",
        "network": "eip155:8453",
        "asset": USDC,
        "payer": PAYER,
        "pay_to": MERCHANT,
        "amount": 10_000,
        "nonce": "0x" + secrets.token_hex(32),
        "valid_before": 4_000_000_000,
        "resource": "GET /paid",
        "fingerprint": request_fingerprint("GET", "/paid", b""),
    }
    base.update(over)
    return base


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def test_what_the_writer_writes_the_engine_reads_back(tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        ledger = Ledger(tmp_path / "rt.sqlite3")
        runner.run(ledger.migrate())

        @settings(max_examples=60, deadline=None)
        @given(
            amount=st.integers(1, 2**256 - 1),
            resource=st.text(
                st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80
            ).filter(str.isprintable),
            headers=st.lists(st.tuples(texts, texts), max_size=5),
            body=st.binary(max_size=300),
            status=st.integers(100, 599),
            block=st.none() | st.integers(0, 2**63 - 1),
        )
        def round_trip(
            amount: int,
            resource: str,
            headers: list[tuple[str, str]],
            body: bytes,
            status: int,
            block: int | None,
        ) -> None:
            async def go() -> None:
                tx = "0x" + secrets.token_hex(32)
                written = [
                    await ledger.reserve(**_payment(amount=amount, resource=resource)),  # type: ignore[arg-type]
                ]
                rid = written[0].id
                written.append(await ledger.mark_settling(rid))
                written.append(await ledger.store_response(rid, status, headers, body))
                written.append(await ledger.mark_settled(rid, tx, block))
                read = await ledger.get(rid)  # through the engine
                assert read == written[-1]
                assert read.amount == amount
                assert read.response is not None
                assert read.response.headers == tuple(headers)
                assert read.response.body == body
                assert (read.state, read.tx_hash, read.block_number) == (State.SETTLED, tx, block)
                assert read.created_at.tzinfo is not None
                assert read.updated_at >= read.created_at

            runner.run(go())

        try:
            round_trip()
        finally:
            runner.run(ledger.close())


def test_writes_use_the_engines_sql_text(tmp_path: Path) -> None:
    statement, _ = _ledger_sql.transition_query(
        "x", from_states=[State.VERIFIED, State.SETTLING], tx_hash="0x" + "ab" * 32, values={}
    )
    plan = _ledger_sqlite.compiled(statement)
    assert plan.text.startswith("UPDATE x402gw_payments SET")
    assert "IN ('verified', 'settling')" in plan.text
    assert [name for name, _ in plan.params] == ["p_id", "p_tx_hash"]
    assert _ledger_sqlite.compiled(statement) is plan  # compiled once


async def test_duplicate_and_reopen_after_close(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "dup.sqlite3")
    await ledger.migrate()
    first = _payment()
    await ledger.reserve(**first)  # type: ignore[arg-type]
    with pytest.raises(AuthorizationInUse):
        await ledger.reserve(**first)  # type: ignore[arg-type]
    await ledger.close()
    again = await ledger.reserve(**_payment())  # type: ignore[arg-type]  (reopens)
    assert (await ledger.get(again.id)).state is State.VERIFIED
    await ledger.close()


async def test_database_gone_bad_is_ledger_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    ledger = Ledger(path)
    await ledger.migrate()
    await ledger.close()
    for leftover in path.parent.glob("bad.sqlite3*"):
        leftover.unlink()
    path.write_bytes(b"not a database at all" * 200)
    with pytest.raises(LedgerUnavailable):
        await ledger.reserve(**_payment())  # type: ignore[arg-type]
    await ledger.close()


def test_an_unclosed_ledger_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from x402gw.ledger import Ledger, request_fingerprint

        async def main():
            ledger = Ledger({"sqlite:///" + str(tmp_path / "open.sqlite3")!r})
            await ledger.migrate()
            await ledger.reserve(
                scheme="exact", network="eip155:8453", asset={USDC!r}, payer={PAYER!r},
                pay_to={MERCHANT!r}, amount=1, nonce="0x" + "11" * 32,
                valid_before=4_000_000_000, resource="GET /", fingerprint="ab" * 32,
            )
            print("reserved")  # and never closed

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reserved"
