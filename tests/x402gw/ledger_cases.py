"""Shared cases of the ledger tests: a payment to reserve, and the checks every write path passes
(what it writes reads back the same through the engine; a duplicate is refused; it reopens
after close; an unclosed ledger lets the process end)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x402gw.ledger import AuthorizationInUse, Ledger, State, request_fingerprint

ROOT = Path(__file__).resolve().parents[2]
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
MERCHANT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
FAR = 4_000_000_000
FP = request_fingerprint("GET", "/paid", b"")


def nonce() -> str:
    return "0x" + secrets.token_hex(32)


def tx() -> str:
    return "0x" + secrets.token_hex(32)


def payment(**over: Any) -> dict[str, Any]:
    """Keyword arguments for `reserve`: a fresh authorization unless overridden."""
    base: dict[str, Any] = {
        "scheme": "exact",
        "network": "eip155:8453",
        "asset": USDC,
        "payer": PAYER,
        "pay_to": MERCHANT,
        "amount": 10_000,
        "nonce": nonce(),
        "valid_before": FAR,
        "resource": "GET /paid",
        "fingerprint": FP,
        "payment_identifier": None,
    }
    base.update(over)
    return base


def check_round_trip(runner: asyncio.Runner, ledger: Ledger, *, nul: bool = True) -> None:
    """Records written through every write (reserve and transitions) read back the same through
    the engine. `nul`: text may hold NUL (PostgreSQL text cannot)."""
    chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="" if nul else "\0")
    texts = st.text(chars, max_size=40)

    @settings(max_examples=60, deadline=None)
    @given(
        amount=st.integers(1, 2**256 - 1),
        resource=st.text(chars, min_size=1, max_size=80).filter(str.isprintable),
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
            tx_hash = tx()
            written = [await ledger.reserve(**payment(amount=amount, resource=resource))]
            rid = written[0].id
            written.append(await ledger.mark_settling(rid))
            written.append(await ledger.store_response(rid, status, headers, body))
            written.append(await ledger.mark_settled(rid, tx_hash, block))
            read = await ledger.get(rid)  # through the engine
            assert read == written[-1]
            assert read.amount == amount
            assert read.response is not None
            assert read.response.headers == tuple(headers)
            assert read.response.body == body
            assert (read.state, read.tx_hash, read.block_number) == (State.SETTLED, tx_hash, block)
            assert read.created_at.tzinfo is not None
            assert read.updated_at >= read.created_at

        runner.run(go())

    round_trip()


async def check_duplicate_and_reopen(ledger: Ledger) -> None:
    """A reused authorization is `AuthorizationInUse`; after `close()` the next write reopens."""
    await ledger.migrate()
    first = payment()
    await ledger.reserve(**first)
    with pytest.raises(AuthorizationInUse):
        await ledger.reserve(**first)
    await ledger.close()
    again = await ledger.reserve(**payment())  # reopens
    assert (await ledger.get(again.id)).state is State.VERIFIED
    await ledger.close()


def check_unclosed_ledger_exits(url: str, schema: str | None = None) -> None:
    """A process that writes through a ledger it never closes still exits, cleanly."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from x402gw.ledger import Ledger

        async def main():
            ledger = Ledger({url!r}, schema={schema!r})
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


def check_two_event_loops(runner: asyncio.Runner, ledger: Ledger) -> None:
    """The ledger written from ``runner``'s loop, from a second loop, then from the first again
    (a second test client, a CLI calling asyncio.run twice): every write lands."""

    async def write() -> str:
        record = await ledger.reserve(**payment())
        return (await ledger.mark_settling(record.id)).id

    ids = [runner.run(write()), asyncio.run(write()), runner.run(write())]

    async def states() -> list[State]:
        return [(await ledger.get(rid)).state for rid in ids]

    assert runner.run(states()) == [State.SETTLING] * 3
