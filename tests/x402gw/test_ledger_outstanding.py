"""Ledger.outstanding and claim_response on both databases: what the gate's funds check and
upfront runs read."""

from __future__ import annotations

import time
from typing import Any

from x402gw.ledger import Ledger

NETWORK, ASSET = "eip155:31337", "0x" + "aa" * 20
PAYER, OTHER, PAY_TO = "0x" + "01" * 20, "0x" + "02" * 20, "0x" + "bb" * 20


async def _reserve(ledger: Ledger, payer: str, nonce: int, amount: int, **changes: Any) -> str:
    values: dict[str, Any] = {
        "scheme": "exact",
        "network": NETWORK,
        "asset": ASSET,
        "payer": payer,
        "pay_to": PAY_TO,
        "amount": amount,
        "nonce": f"0x{nonce:064x}",
        "valid_before": int(time.time()) + 300,
        "resource": "GET /r",
        "fingerprint": "0" * 64,
    }
    values.update(changes)
    return (await ledger.reserve(**values)).id


async def test_outstanding_counts_in_flight_and_recent_settlements(ledger: Ledger) -> None:
    start = time.time()
    assert await ledger.outstanding(NETWORK, ASSET, PAYER, settled_since=start) == (0, 0)
    a = await _reserve(ledger, PAYER, 1, 10_000)
    b = await _reserve(ledger, PAYER, 2, 25_000)
    await _reserve(ledger, OTHER, 3, 99_999)  # another payer
    await _reserve(ledger, PAYER, 4, 7, valid_before=int(time.time()) - 1)  # expired
    released = await _reserve(ledger, PAYER, 5, 500)
    await ledger.release(released)
    assert await ledger.outstanding(NETWORK, ASSET, PAYER, settled_since=start) == (2, 35_000)
    await ledger.mark_settling(a)
    await ledger.mark_settled(a, "0x" + "cd" * 32)
    # settled after `start`: counted (the balance moved since), but no longer in flight
    assert await ledger.outstanding(NETWORK, ASSET, PAYER, settled_since=start) == (2, 25_000)
    later = time.time() + 1
    assert await ledger.outstanding(NETWORK, ASSET, PAYER, settled_since=later) == (1, 25_000)
    await ledger.mark_settling(b)
    await ledger.mark_failed(b, "transaction_failed")
    assert await ledger.outstanding(NETWORK, ASSET, PAYER, settled_since=later) == (0, 0)


async def test_large_amounts_add_up_exactly(ledger: Ledger) -> None:
    big = 10**30  # beyond 64-bit integers
    await _reserve(ledger, PAYER, 1, big)
    await _reserve(ledger, PAYER, 2, big + 1)
    count, total = await ledger.outstanding(NETWORK, ASSET, PAYER, settled_since=time.time())
    assert (count, total) == (2, 2 * big + 1)


async def test_one_claim_wins_and_a_stale_one_can_be_retaken(ledger: Ledger) -> None:
    record = await _reserve(ledger, PAYER, 1, 10_000)
    assert await ledger.claim_response(record) is None  # not settled yet
    await ledger.mark_settling(record)
    await ledger.mark_settled(record, "0x" + "cd" * 32)
    claimed = await ledger.claim_response(record)
    assert claimed is not None
    assert claimed.response is not None
    assert claimed.response.status == 102
    assert await ledger.claim_response(record) is None  # taken
    assert await ledger.claim_response(record, stale_after=-1.0) is not None  # died: retaken
    await ledger.store_response(record, 200, [("content-type", "text/plain")], b"done")
    assert await ledger.claim_response(record, stale_after=-1.0) is None  # answered


async def test_amounts_beyond_64_bits_in_flight_together(ledger: Ledger) -> None:
    """Two payments of 5 * 10**18 (5 units of an 18-decimal token): their sum overflows 64 bits."""
    await _reserve(ledger, PAYER, 1, 5 * 10**18)
    await _reserve(ledger, PAYER, 2, 5 * 10**18)
    count, total = await ledger.outstanding(NETWORK, ASSET, PAYER, settled_since=time.time())
    assert (count, total) == (2, 10**19)


def test_a_ledger_of_the_first_revision_upgrades_in_place(tmp_path: Any) -> None:
    """A database left at 0001 by an older x402gw gains the signature hash column; its records
    stay (with no hash) and read back."""
    import asyncio
    import sqlite3
    from pathlib import Path

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    import x402gw.ledger._statements as sql

    path = Path(tmp_path) / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(Path(sql.__file__).with_name("migrations")))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001_ledger_tables")
    engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO x402gw_payments (id, scheme, network, asset, payer, pay_to, amount, nonce,"
            " valid_before, resource, fingerprint, state, created_at, updated_at) VALUES ('r1',"
            " 'exact', 'n', 'a', 'p', 'b', '5', '0x01', 0, 'r', 'f', 'settled',"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )

    async def upgrade() -> tuple[str | None, Any]:
        ledger = Ledger(f"sqlite:///{path}")
        try:
            return await ledger.migrate(), await ledger.get("r1")
        finally:
            await ledger.close()

    revision, record = asyncio.run(upgrade())
    assert revision == "0002_signature_hash"
    assert record.amount == 5
    assert record.signature_hash is None
