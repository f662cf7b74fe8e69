"""The in-memory store: the ledger's twin. It runs the whole behavioural suite of test_ledger.py
and test_ledger_outstanding.py (the `backend` fixture); here, what is its own (no schema, shared
between ledgers, copies what it keeps), and a differential check: any sequence of operations
gives the same answers and the same records on the in-memory store as on SQLite."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_cases import (
    FP,
    check_duplicate_and_reopen,
    check_round_trip,
    check_two_event_loops,
    payment,
)

from x402gw.ledger import (
    InvalidPaymentData,
    Ledger,
    LedgerError,
    MemoryStore,
    PaymentRecord,
    State,
    request_fingerprint,
)
from x402gw.ledger.store import Store, UniqueViolation


def test_what_it_keeps_reads_back_the_same() -> None:
    with asyncio.Runner() as runner:
        check_round_trip(runner, Ledger(MemoryStore()))


async def test_duplicate_and_reopen_after_close() -> None:
    await check_duplicate_and_reopen(Ledger(MemoryStore()))


def test_one_ledger_from_two_event_loops() -> None:
    with asyncio.Runner() as runner:
        check_two_event_loops(runner, Ledger(MemoryStore()))


async def test_no_schema_no_revision_and_its_name() -> None:
    store = MemoryStore()
    assert isinstance(store, Store)
    with pytest.raises(InvalidPaymentData):
        Ledger(store, schema="ledger")
    async with Ledger(store) as ledger:
        assert ledger.dialect == "memory"
        assert await ledger.migrate() is None


async def test_ledgers_on_one_store_share_it_and_closing_keeps_the_records() -> None:
    store = MemoryStore()
    one, two = Ledger(store), Ledger(store)
    record = await one.reserve(**payment())
    await one.close()
    assert await two.get(record.id) == record
    assert await two.records() == [record]


async def test_a_caller_changing_its_headers_later_changes_nothing() -> None:
    ledger = Ledger(MemoryStore())
    record = await ledger.reserve(**payment())
    headers = [("x-a", "1")]
    await ledger.store_response(record.id, 200, headers, b"ok")
    headers.append(("x-b", "2"))
    stored = (await ledger.get(record.id)).response
    assert stored is not None
    assert stored.headers == (("x-a", "1"),)


async def test_the_store_refuses_unknown_columns_and_a_second_id() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidPaymentData):
        await store.insert({"id": "a", "no_such_column": 1})
    record = await Ledger(store).reserve(**payment())
    with pytest.raises(InvalidPaymentData):
        await store.transition(
            record.id, sources=[State.VERIFIED], tx_hash=None, values={"nope": 1}
        )
    released = {
        "id": record.id,
        "state": State.RELEASED.value,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    with pytest.raises(UniqueViolation):
        await store.insert(released)
    assert issubclass(UniqueViolation, LedgerError)


async def test_records_filters_by_state_oldest_first() -> None:
    now = [1_000_000.0]
    ledger = Ledger(MemoryStore(), clock=lambda: now[0])
    first = await ledger.reserve(**payment())
    now[0] += 1
    second = await ledger.reserve(**payment())
    now[0] += 1
    third = await ledger.reserve(**payment())
    await ledger.release(second.id)
    assert [r.id for r in await ledger.records()] == [first.id, second.id, third.id]
    assert [r.id for r in await ledger.records(State.VERIFIED)] == [first.id, third.id]
    assert [r.id for r in await ledger.records(State.RELEASED)] == [second.id]
    assert await ledger.records(State.SETTLED) == []
    assert all(isinstance(r, PaymentRecord) for r in await ledger.records())
    with pytest.raises(ValueError, match="bogus"):
        await ledger.records("bogus")  # type: ignore[arg-type]


# --- the twin: the same answers as SQLite -------------------------------------------------------

NONCES = ["0x" + f"{i:064x}" for i in range(1, 4)]
HASHES = ["0x" + f"{i:02x}" * 32 for i in range(1, 4)]
PIDS = [None, "pid-a", "pid-b"]

reserve = st.tuples(
    st.just("reserve"),
    st.sampled_from(range(len(NONCES))),
    st.sampled_from(range(len(PIDS))),
    st.sampled_from([1, 10_000, 2**64 + 1]),
    st.sampled_from([0, 100, 10**9]),  # valid_before, against a clock of 1e6 + ticks
)
record = st.integers(0, 3)  # which of the records made so far (modulo their number)
operation = st.one_of(
    reserve,
    reserve,  # weighted: reuses of a nonce or payment identifier are what the keys are for
    st.tuples(st.just("settle"), record, st.none() | st.integers(0, 2)),
    st.tuples(st.just("broadcast"), record, st.integers(0, 2)),
    st.tuples(st.just("settled"), record, st.integers(0, 2)),
    st.tuples(st.just("fail"), record),
    st.tuples(st.just("release"), record),
    st.tuples(st.just("release"), record),
    st.tuples(st.just("store"), record, st.sampled_from([200, 402, 500])),
    st.tuples(st.just("claim"), record, st.sampled_from([-1.0, 3600.0])),
    st.tuples(st.just("outstanding"), st.sampled_from([0.0, 30.0])),
    st.tuples(st.just("replay"), st.integers(1, 2), st.booleans()),
    st.tuples(st.just("stale"), st.sampled_from([0, 50])),
    st.tuples(st.just("tick"), st.integers(1, 60)),
)


class Twin:
    """One ledger and what a sequence of operations got from it."""

    def __init__(self, ledger: Ledger, clock: list[float], payer: str, tag: str) -> None:
        self.ledger, self.clock, self.payer, self.tag = ledger, clock, payer, tag
        self.ids: list[str] = []

    def _id(self, index: int) -> str:
        return self.ids[index % len(self.ids)] if self.ids else "missing"

    def _shape(self, value: Any) -> Any:
        """A result with this ledger's record ids replaced by their position."""
        if isinstance(value, PaymentRecord):
            return (
                self.ids.index(value.id),
                value.state,
                value.amount,
                value.nonce,
                value.payment_identifier,
                value.tx_hash,
                value.block_number,
                value.error,
                value.response,
                value.created_at,
                value.updated_at,
                value.reconciled_at,
                value.valid_before,
            )
        if isinstance(value, list):
            return [self._shape(v) for v in value]
        return value

    async def run(self, op: tuple[Any, ...]) -> Any:
        try:
            return self._shape(await self._do(op))
        except LedgerError as exc:
            return type(exc).__name__

    async def _do(self, op: tuple[Any, ...]) -> Any:
        ledger, kind = self.ledger, op[0]
        if kind == "reserve":
            _, n, p, amount, valid_before = op
            pid = None if PIDS[p] is None else f"{self.tag}-{PIDS[p]}"
            record = await ledger.reserve(
                **payment(
                    payer=self.payer,
                    nonce=NONCES[n],
                    payment_identifier=pid,
                    amount=amount,
                    valid_before=1_000_000 + valid_before,
                )
            )
            self.ids.append(record.id)
            return record
        if kind == "settle":
            return await ledger.mark_settling(
                self._id(op[1]), None if op[2] is None else HASHES[op[2]]
            )
        if kind == "broadcast":
            return await ledger.record_broadcast(self._id(op[1]), HASHES[op[2]])
        if kind == "settled":
            return await ledger.mark_settled(self._id(op[1]), HASHES[op[2]], 7)
        if kind == "fail":
            return await ledger.mark_failed(self._id(op[1]), "failed")
        if kind == "release":
            return await ledger.release(self._id(op[1]))
        if kind == "store":
            return await ledger.store_response(self._id(op[1]), op[2], [("k", "v")], b"body")
        if kind == "claim":
            return await ledger.claim_response(self._id(op[1]), stale_after=op[2])
        if kind == "outstanding":
            asset, network = payment()["asset"], payment()["network"]
            since = self.clock[0] - op[1]
            return await ledger.outstanding(network, asset, self.payer, settled_since=since)
        if kind == "replay":
            fingerprint = FP if op[2] else request_fingerprint("POST", "/other", b"")
            return await ledger.replay(f"{self.tag}-{PIDS[op[1]]}", fingerprint)
        if kind == "stale":
            released = await ledger.release_stale(op[1])
            return sorted(self.ids.index(rid) for rid in released if rid in self.ids)
        assert kind == "tick"
        self.clock[0] += op[1]
        return None

    async def mine(self) -> list[Any]:
        """This example's records, in the order they were made (ids break ties of creation
        time, and ids differ between the two ledgers)."""
        mine = [r for r in await self.ledger.records() if r.payer == self.payer]
        return sorted(self._shape(mine))


def test_the_in_memory_store_answers_as_sqlite_does(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    with asyncio.Runner() as runner:
        sqlite = Ledger(tmp_path / "twin.sqlite3", clock=lambda: clock[0])
        memory = Ledger(MemoryStore(), clock=lambda: clock[0])
        runner.run(sqlite.migrate())

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(operation, max_size=25))
        def same(ops: list[tuple[Any, ...]]) -> None:
            clock[0] = 1_000_000.0
            payer = "0x" + secrets.token_hex(20)  # this example's own records
            tag = secrets.token_hex(6)
            one = Twin(sqlite, clock, payer, tag)
            two = Twin(memory, clock, payer, tag)

            async def go() -> None:
                for op in ops:
                    saved = clock[0]
                    a = await one.run(op)
                    clock[0] = saved  # both see the same time
                    b = await two.run(op)
                    assert a == b, op
                assert await one.mine() == await two.mine()

            runner.run(go())

        try:
            same()
        finally:
            runner.run(sqlite.close())


def test_the_twin_check_sees_a_difference() -> None:
    """The shape compared above tells records apart (so the differential check can fail)."""
    twin = Twin(Ledger(MemoryStore()), [1_000_000.0], "0x" + "11" * 20, "t")
    first = asyncio.run(twin._do(("reserve", 0, 0, 1, 100)))
    assert twin._shape(first)[0] == 0
    for change in (
        {"state": State.FAILED},
        {"updated_at": datetime(2000, 1, 1, tzinfo=UTC)},
        {"tx_hash": HASHES[0]},
        {"amount": 2},
    ):
        assert twin._shape(replace(first, **change)) != twin._shape(first), change
