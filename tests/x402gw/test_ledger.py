"""Payment ledger: transition table, one-authorization-one-use, idempotency, reconcile, migrations.

Behavioural tests run on every store (a fresh SQLite file, a fresh PostgreSQL schema, and the
in-memory store); those only a database can pass (migrations, several processes) on both
databases.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from lab.ledgerdb import SQL_BACKENDS, Db
from ledger_cases import FP, MERCHANT, PAYER, USDC, payment, tx
from redis.asyncio import Redis

from x402gw.ledger import (
    TERMINAL,
    AuthorizationInUse,
    ConflictingTxHash,
    Event,
    InvalidPaymentData,
    InvalidTransition,
    Ledger,
    LedgerUnavailable,
    PaymentIdentifierConflict,
    PaymentIdentifierInUse,
    PaymentRecord,
    RecordNotFound,
    State,
    StoredResponse,
    TxOutcome,
    _statements,
    next_state,
    request_fingerprint,
)
from x402gw.ledger.memory import MemoryStore
from x402gw.ledger.records import COLUMNS
from x402gw.ledger.rules import (
    CLAIMED_STATUS,
    allowed_events,
    authorization_key,
    claimable,
    counts_outstanding,
    decide_reconcile,
    event_effect,
    in_flight,
    is_live,
    replayable,
    transition_applies,
)
from x402gw.locks import InProcessLocks, RedisLocks

ROOT = Path(__file__).resolve().parents[2]


# --- the pure transition table ------------------------------------------------------------------

# The legal edges, written out from the spec independently of the table under test.
LEGAL = {
    (State.VERIFIED, State.SETTLING),
    (State.VERIFIED, State.FAILED),
    (State.VERIFIED, State.RELEASED),
    (State.SETTLING, State.SETTLED),
    (State.SETTLING, State.FAILED),
}

states = st.sampled_from(list(State))
events = st.sampled_from(list(Event))


@given(states, events)
def test_event_effect_agrees_with_the_table(state: State, event: Event) -> None:
    # The ledger applies an event as one UPDATE built from event_effect, never via next_state.
    sources, target = event_effect(event)
    if state not in sources:
        with pytest.raises(InvalidTransition):
            next_state(state, event)
        return
    assert next_state(state, event) == (state if target is None else target)


@settings(deadline=None)  # the machine may be busy; correctness is what counts
@given(st.lists(events, max_size=30))
def test_any_event_sequence_only_walks_legal_edges(seq: list[Event]) -> None:
    state = State.VERIFIED
    for event in seq:
        if event not in allowed_events(state):
            with pytest.raises(InvalidTransition) as info:
                next_state(state, event)
            assert (info.value.state, info.value.event) == (state, event)
            continue
        new = next_state(state, event)
        assert new == state or (state, new) in LEGAL
        state = new


@settings(deadline=None)  # the machine may be busy; correctness is what counts
@given(st.sampled_from(sorted(TERMINAL)), st.lists(events, max_size=30))
def test_no_way_back_from_a_terminal_state(start: State, seq: list[Event]) -> None:
    state = start
    for event in seq:
        try:
            state = next_state(state, event)
        except InvalidTransition:
            continue
        assert state == start


@settings(deadline=None)  # the machine may be busy; correctness is what counts
@given(states, events)
def test_next_state_is_total_over_the_table(state: State, event: Event) -> None:
    try:
        new = next_state(state, event)
    except InvalidTransition:
        return
    assert new in State
    if new != state:
        assert (state, new) in LEGAL
    if state == State.RELEASED:
        pytest.fail("released accepts no event at all")


def test_every_state_is_reachable_and_every_legal_edge_is_used() -> None:
    seen_edges: set[tuple[State, State]] = set()
    frontier, reached = [State.VERIFIED], {State.VERIFIED}
    while frontier:
        state = frontier.pop()
        for event in Event:
            try:
                new = next_state(state, event)
            except InvalidTransition:
                continue
            if new != state:
                seen_edges.add((state, new))
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(State)
    assert seen_edges == LEGAL


def test_broadcast_and_store_response_do_not_change_state() -> None:
    assert next_state(State.SETTLING, Event.BROADCAST) == State.SETTLING
    for state in (State.VERIFIED, State.SETTLING, State.SETTLED, State.FAILED):
        assert next_state(state, Event.STORE_RESPONSE) == state
    with pytest.raises(InvalidTransition):
        next_state(State.RELEASED, Event.STORE_RESPONSE)
    with pytest.raises(InvalidTransition):
        next_state(State.VERIFIED, Event.BROADCAST)


hashes = st.none() | st.sampled_from(["0x" + "aa" * 32, "0x" + "bb" * 32])


@given(states, events, hashes, hashes)
def test_a_store_applies_an_event_exactly_when_the_table_allows_it(
    state: State, event: Event, recorded: str | None, offered: str | None
) -> None:
    # What every store does (a conditional UPDATE or the in-memory store's check).
    sources, _ = event_effect(event)
    allowed = event in allowed_events(state)
    applies = transition_applies(state, recorded, sources, offered)
    assert applies == (allowed and (offered is None or recorded in (None, offered)))
    if applies:
        next_state(state, event)  # does not raise


times = st.datetimes(timezones=st.just(UTC))
statuses = st.none() | st.sampled_from([CLAIMED_STATUS, 200, 399, 400, 402, 500])


@given(states, st.integers(0, 10), st.integers(0, 10), times, times)
def test_what_counts_against_a_payers_funds(
    state: State, valid_before: int, now: int, updated: datetime, since: datetime
) -> None:
    flying = in_flight(state, valid_before, now)
    assert flying == (state in (State.VERIFIED, State.SETTLING) and valid_before > now)
    assert not flying or is_live(state)
    counted = counts_outstanding(state, valid_before, updated, now, since)
    assert counted == (flying or (state is State.SETTLED and updated >= since))
    assert is_live(state) == (state is not State.RELEASED)


@given(states, statuses, times, times)
def test_claims_and_replays(
    state: State, status: int | None, updated: datetime, stale_before: datetime
) -> None:
    claim = claimable(state, status, updated, stale_before)
    assert claim == (
        state is State.SETTLED
        and (status is None or (status == CLAIMED_STATUS and updated < stale_before))
    )
    replay = replayable(state, status)
    assert replay == (
        status not in (None, CLAIMED_STATUS)
        and (state is State.SETTLED or (state is State.FAILED and status >= 400))
    )
    assert not (claim and replay)  # a record a run may take has nothing to replay


async def _walk(ledger: Ledger, seq: list[Event]) -> None:
    """Apply `seq` through the adapter methods; each must agree with the pure table."""
    record = await ledger.reserve(**payment())
    h = tx()
    calls = {
        Event.SETTLE: lambda: ledger.mark_settling(record.id),
        Event.BROADCAST: lambda: ledger.record_broadcast(record.id, h),
        Event.SETTLED: lambda: ledger.mark_settled(record.id, h, 1),
        Event.FAIL: lambda: ledger.mark_failed(record.id, "failed"),
        Event.RELEASE: lambda: ledger.release(record.id),
        Event.STORE_RESPONSE: lambda: ledger.store_response(record.id, 200, [], b"ok"),
    }
    state = State.VERIFIED
    for event in seq:
        if event not in allowed_events(state):
            with pytest.raises(InvalidTransition):
                await calls[event]()
        else:
            state = next_state(state, event)
            assert (await calls[event]()).state is state
        assert (await ledger.get(record.id)).state is state


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_adapter_methods_follow_the_table(tmp_path: Path, store: str) -> None:
    with asyncio.Runner() as runner:
        ledger = Ledger(tmp_path / "walk.sqlite3" if store == "sqlite" else MemoryStore())
        runner.run(ledger.migrate())

        @settings(max_examples=40, deadline=None)
        @given(st.lists(events, max_size=6))
        def walk(seq: list[Event]) -> None:
            runner.run(_walk(ledger, seq))

        try:
            walk()
        finally:
            runner.run(ledger.close())


# --- the pure reconcile decision ----------------------------------------------------------------

outcomes = st.none() | st.sampled_from(list(TxOutcome))
tri = st.none() | st.booleans()


@settings(deadline=None)  # the machine may be busy; correctness is what counts
@given(st.booleans(), outcomes, tri, st.booleans())
def test_reconcile_decision_never_contradicts_the_chain(
    has_hash: bool, outcome: TxOutcome | None, used: bool | None, expired: bool
) -> None:
    if not has_hash:
        outcome = None
    decision = decide_reconcile(
        has_tx_hash=has_hash, outcome=outcome, authorization_used=used, expired=expired
    )
    mined = outcome is TxOutcome.MINED_OK
    if decision.event is Event.SETTLED:
        assert mined or used is True
    elif decision.event is Event.FAIL:
        assert not mined
        assert used is not True
        assert outcome is TxOutcome.REVERTED or (used is False and expired)
    else:
        assert decision.event is None
        assert not mined
        assert used is not True
        assert outcome is not TxOutcome.REVERTED
        assert not (used is False and expired)


# --- fingerprints and input validation ----------------------------------------------------------

request_parts = st.tuples(
    st.sampled_from(["GET", "POST", "PUT"]),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.none() | st.text(max_size=10),
)


@settings(deadline=None)  # the machine may be busy; correctness is what counts
@given(request_parts, request_parts)
def test_fingerprint_differs_exactly_when_the_request_differs(a: Any, b: Any) -> None:
    assert (request_fingerprint(*a) == request_fingerprint(*b)) == (a == b)


def test_fingerprint_framing_and_method_case() -> None:
    assert request_fingerprint("GET", "/ab", b"") != request_fingerprint("GET", "/a", b"b")
    assert request_fingerprint("GET", "/a", b"", "") != request_fingerprint("GET", "/a", b"")
    assert request_fingerprint("get", "/a", b"x") == request_fingerprint("GET", "/a", b"x")
    with pytest.raises(InvalidPaymentData):
        request_fingerprint("GET", "/a", "not bytes")  # type: ignore[arg-type]


BAD_FIELDS = [
    {"nonce": "0x1234"},
    {"nonce": "ab" * 32},
    {"nonce": 5},
    {"amount": -1},
    {"amount": 1.5},
    {"amount": True},
    {"amount": "10000"},
    {"amount": 2**256},
    {"valid_before": -1},
    {"valid_before": 2**256},
    {"valid_before": 1.0},
    {"payer": ""},
    {"payer": "0x70997970 C51812dc3A010C7d01b50e0d17dc79C8"},
    {"asset": "x" * 201},
    {"pay_to": None},
    {"network": "eip155 8453"},
    {"scheme": ""},
    {"resource": ""},
    {"resource": "GET /a\n"},
    {"fingerprint": "abc"},
    {"fingerprint": FP.upper()},
    {"payment_identifier": "has space"},
    {"payment_identifier": ""},
]


@pytest.mark.parametrize(
    "bad", BAD_FIELDS, ids=lambda d: f"{next(iter(d))}={next(iter(d.values()))!r}"[:40]
)
async def test_reserve_rejects_bad_fields(ledger: Ledger, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidPaymentData):
        await ledger.reserve(**payment(**bad))
    assert await ledger.records() == []


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h/db",
        "not a url at all",
        "oracle+cx_oracle://scott@h/x",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:led?mode=memory&uri=true",
    ],
)
def test_unsupported_database_url(url: str) -> None:
    with pytest.raises(InvalidPaymentData):
        Ledger(url)


def test_schema_is_postgres_only_and_must_be_an_identifier(sqlite_url: str) -> None:
    with pytest.raises(InvalidPaymentData):
        Ledger(sqlite_url, schema="ledger")
    for bad in ("Ledger", "a-b", 'x"; drop', "", "a" * 64):
        with pytest.raises(InvalidPaymentData):
            Ledger("postgresql://postgres@127.0.0.1/test", schema=bad)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_postgres_is_a_typed_error() -> None:
    async with Ledger(f"postgresql://postgres@127.0.0.1:{_closed_port()}/none") as ledger:
        with pytest.raises(LedgerUnavailable):
            await ledger.migrate()
        with pytest.raises(LedgerUnavailable):
            await ledger.get("x")


async def test_unusable_sqlite_is_a_typed_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database file" * 100)
    async with Ledger(junk) as ledger:
        with pytest.raises(LedgerUnavailable):
            await ledger.reserve(**payment())
    with pytest.raises(InvalidPaymentData):
        Ledger(tmp_path / "missing-dir" / "ledger.sqlite3")


# --- migrations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_migration_runs_twice_and_matches_the_model(db: Db) -> None:
    engine = _statements.create_engine(db.url, db.schema)  # the database, seen from outside
    try:
        async with db.ledger() as ledger:
            async with engine.connect() as conn:
                assert await conn.run_sync(_statements.current_revision) is None
            assert ledger.dialect == ("sqlite" if db.schema is None else "postgresql")
            first = await ledger.migrate()
            second = await ledger.migrate()
            assert first == second == "0002_signature_hash"

        def diff(sync_conn: sa.Connection) -> list[Any]:
            ctx = MigrationContext.configure(
                sync_conn, opts={"version_table": _statements.VERSION_TABLE}
            )
            return list(compare_metadata(ctx, _statements.metadata))

        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert {"x402gw_payments", "x402gw_alembic_version"} <= tables
    assert "alembic_version" not in tables  # never collides with the server's own history


def test_the_table_has_the_records_columns() -> None:
    assert tuple(_statements.payments.c.keys()) == COLUMNS


async def test_concurrent_migrations_on_postgres(pg_db: Db) -> None:
    ledgers = [pg_db.ledger() for _ in range(3)]
    try:
        revisions = await asyncio.gather(*(lg.migrate() for lg in ledgers))
        assert revisions == ["0002_signature_hash"] * 3
    finally:
        for lg in ledgers:
            await lg.close()


# --- reserve: one authorization, one use ---------------------------------------------------------


async def test_reserve_stores_exact_values(ledger: Ledger) -> None:
    big = 2**256 - 1
    record = await ledger.reserve(
        **payment(amount=big, valid_before=2**200, payment_identifier="pid-1")
    )
    again = await ledger.get(record.id)
    assert again == record
    assert record.amount == big
    assert record.valid_before == 2**63 - 1  # saturated: past any real chain's clock
    assert record.state is State.VERIFIED
    assert record.payer == PAYER.lower()
    assert record.asset == USDC.lower()
    assert record.pay_to == MERCHANT.lower()
    assert record.created_at.tzinfo is not None
    assert record.authorization_key == authorization_key("eip155:8453", USDC, PAYER, record.nonce)


async def test_second_use_is_refused_even_with_other_address_case(ledger: Ledger) -> None:
    first = await ledger.reserve(**payment())
    for payer in (PAYER, PAYER.lower(), PAYER.upper().replace("0X", "0x")):
        with pytest.raises(AuthorizationInUse) as info:
            await ledger.reserve(
                **payment(nonce=first.nonce.upper().replace("0X", "0x"), payer=payer)
            )
        assert info.value.record_id == first.id
        assert info.value.state is State.VERIFIED
    # another network, asset or payer is another authorization
    await ledger.reserve(**payment(nonce=first.nonce, network="eip155:84532"))
    await ledger.reserve(**payment(nonce=first.nonce, payer=MERCHANT))


async def test_released_authorization_may_be_tried_again(ledger: Ledger) -> None:
    first = await ledger.reserve(**payment())
    released = await ledger.release(first.id)
    assert released.state is State.RELEASED
    second = await ledger.reserve(**payment(nonce=first.nonce))
    assert second.id != first.id
    assert (await ledger.get(first.id)).state is State.RELEASED  # history is kept
    with pytest.raises(AuthorizationInUse):
        await ledger.reserve(**payment(nonce=first.nonce))


@pytest.mark.parametrize("end", ["settled", "failed", "settling"])
async def test_settled_failed_and_settling_keep_blocking(ledger: Ledger, end: str) -> None:
    record = await ledger.reserve(**payment())
    if end == "failed":
        await ledger.mark_failed(record.id, "settle refused")
    else:
        await ledger.mark_settling(record.id)
        if end == "settled":
            await ledger.mark_settled(record.id, tx(), 7)
    with pytest.raises(AuthorizationInUse) as info:
        await ledger.reserve(**payment(nonce=record.nonce))
    assert info.value.state == State(end)


async def test_fifty_concurrent_reserves_one_winner(ledger: Ledger) -> None:
    same = payment()

    async def attempt() -> PaymentRecord | AuthorizationInUse:
        try:
            return await ledger.reserve(**same)
        except AuthorizationInUse as exc:
            return exc

    results = await asyncio.gather(*(attempt() for _ in range(50)))
    winners = [r for r in results if isinstance(r, PaymentRecord)]
    assert len(winners) == 1
    losers = [r for r in results if isinstance(r, AuthorizationInUse)]
    assert len(losers) == 49
    assert {r.record_id for r in losers} <= {winners[0].id, None}


WORKER = """
import asyncio, json, sys
from x402gw.ledger import AuthorizationInUse, Ledger

async def main() -> None:
    url, schema, n, fields = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), json.loads(sys.argv[4])
    async with Ledger(url, schema=schema) as ledger:
        await ledger.pending_settlements()  # open a connection before the start signal
        print("ready", flush=True)
        sys.stdin.readline()

        async def one():
            try:
                await ledger.reserve(**fields)
                return "won"
            except AuthorizationInUse:
                return "in_use"

        tasks = [asyncio.ensure_future(one()) for _ in range(n)]
        await asyncio.sleep(0)  # let the tasks start before telling the parent to go
        print("started", flush=True)
        results = await asyncio.gather(*tasks)
        print(json.dumps({"won": results.count("won"), "in_use": results.count("in_use")}))

asyncio.run(main())
"""


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_two_processes_race_for_one_authorization(ledger: Ledger, db: Db) -> None:
    same = payment()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        db.url,
        db.schema or "",
        "25",
        json.dumps(same),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"

    async def one() -> str:
        try:
            await ledger.reserve(**same)
            return "won"
        except AuthorizationInUse:
            return "in_use"

    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"started"
    mine = await asyncio.gather(*(one() for _ in range(25)))
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    theirs = json.loads(out)
    assert mine.count("won") + theirs["won"] == 1
    assert mine.count("in_use") + theirs["in_use"] == 49


# --- transitions --------------------------------------------------------------------------------


async def test_happy_path_persists_hash_before_receipt(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment())
    settling = await ledger.mark_settling(record.id)
    assert (settling.state, settling.tx_hash) == (State.SETTLING, None)
    h = tx()
    broadcast = await ledger.record_broadcast(record.id, h.upper().replace("0X", "0x"))
    assert (broadcast.state, broadcast.tx_hash) == (State.SETTLING, h)
    assert [r.id for r in await ledger.pending_settlements()] == [record.id]
    done = await ledger.mark_settled(record.id, h, block=123)
    assert (done.state, done.tx_hash, done.block_number) == (State.SETTLED, h, 123)
    assert await ledger.pending_settlements() == []
    assert done.updated_at >= done.created_at


async def test_mark_settling_with_hash(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment())
    h = tx()
    assert (await ledger.mark_settling(record.id, h)).tx_hash == h
    assert (await ledger.record_broadcast(record.id, h)).tx_hash == h  # same hash again is fine


async def test_illegal_transitions_are_typed(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment())
    with pytest.raises(InvalidTransition):
        await ledger.record_broadcast(record.id, tx())
    with pytest.raises(InvalidTransition):
        await ledger.mark_settled(record.id, tx())
    await ledger.mark_settling(record.id)
    with pytest.raises(InvalidTransition) as info:
        await ledger.release(record.id)
    assert (info.value.state, info.value.event) == (State.SETTLING, Event.RELEASE)
    with pytest.raises(InvalidTransition):
        await ledger.mark_settling(record.id)
    await ledger.mark_failed(record.id, "transaction_failed")
    for call in (
        ledger.mark_settling(record.id),
        ledger.mark_settled(record.id, tx()),
        ledger.release(record.id),
        ledger.mark_failed(record.id, "again"),
    ):
        with pytest.raises(InvalidTransition):
            await call
    assert (await ledger.get(record.id)).error == "transaction_failed"


async def test_released_record_takes_no_response(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment())
    await ledger.release(record.id)
    with pytest.raises(InvalidTransition):
        await ledger.store_response(record.id, 200, [], b"")


async def test_unknown_record_id(ledger: Ledger) -> None:
    with pytest.raises(RecordNotFound) as info:
        await ledger.mark_settling("nope")
    assert "nope" in str(info.value)
    with pytest.raises(RecordNotFound):
        await ledger.get("nope")


async def test_second_transaction_hash_is_refused(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment())
    first = tx()
    await ledger.mark_settling(record.id, first)
    other = tx()
    with pytest.raises(ConflictingTxHash) as info:
        await ledger.record_broadcast(record.id, other)
    assert (info.value.recorded, info.value.offered) == (first, other)
    with pytest.raises(ConflictingTxHash):
        await ledger.mark_settled(record.id, other)
    assert (await ledger.get(record.id)).tx_hash == first


async def test_concurrent_broadcasts_record_one_hash(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment())
    await ledger.mark_settling(record.id)
    hashes = [tx() for _ in range(10)]

    async def attempt(h: str) -> str | None:
        try:
            return (await ledger.record_broadcast(record.id, h)).tx_hash
        except ConflictingTxHash:
            return None

    results = await asyncio.gather(*(attempt(h) for h in hashes))
    kept = (await ledger.get(record.id)).tx_hash
    assert [r for r in results if r is not None] == [kept]


async def test_concurrent_settle_and_fail_one_wins(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment())
    h = tx()
    await ledger.mark_settling(record.id, h)

    async def attempt(kind: str) -> str:
        try:
            if kind == "settle":
                await ledger.mark_settled(record.id, h, 1)
            else:
                await ledger.mark_failed(record.id, "timeout")
            return kind
        except InvalidTransition:
            return "lost"

    results = await asyncio.gather(*(attempt(k) for k in ["settle", "fail"] * 5))
    final = (await ledger.get(record.id)).state
    assert results.count("lost") == 9
    assert final is (State.SETTLED if "settle" in results else State.FAILED)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("record_broadcast", ("0x1234",)),
        ("mark_settling", ("not-a-hash",)),
        ("mark_settled", ("0x" + "z" * 64,)),
        ("mark_settled", ("0x" + "1" * 64, -1)),
        ("mark_settled", ("0x" + "1" * 64, True)),
        ("mark_failed", ("",)),
        ("store_response", (99, [], b"")),
        ("store_response", (200, [("a",)], b"")),
        ("store_response", (200, [("a", 1)], b"")),
        ("store_response", (200, [], "text")),
        ("store_response", (True, [], b"")),
    ],
)
async def test_transition_arguments_are_validated(
    ledger: Ledger, call: str, args: tuple[Any, ...]
) -> None:
    record = await ledger.reserve(**payment())
    if call in ("record_broadcast", "mark_settled"):
        await ledger.mark_settling(record.id)
    with pytest.raises(InvalidPaymentData):
        await getattr(ledger, call)(record.id, *args)


# --- idempotency by payment identifier ----------------------------------------------------------


async def test_idempotent_replay_and_conflict(ledger: Ledger) -> None:
    pid = "pay_" + secrets.token_hex(8)
    assert await ledger.replay(pid, FP) is None
    assert await ledger.find_by_payment_identifier(pid) is None
    record = await ledger.reserve(**payment(payment_identifier=pid))
    assert (await ledger.find_by_payment_identifier(pid)) == record

    with pytest.raises(PaymentIdentifierInUse) as busy:
        await ledger.replay(pid, FP)  # first request still running
    assert busy.value.record_id == record.id

    await ledger.mark_settling(record.id)
    await ledger.mark_settled(record.id, tx(), 9)
    headers = [("content-type", "application/json"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]
    await ledger.store_response(record.id, 200, headers, b'{"ok":true}')

    replayed = await ledger.replay(pid, FP)
    assert replayed == StoredResponse(200, tuple(headers), b'{"ok":true}')

    other = request_fingerprint("POST", "/paid", b"{}")
    with pytest.raises(PaymentIdentifierConflict) as conflict:
        await ledger.replay(pid, other)
    assert conflict.value.record_id == record.id

    with pytest.raises(PaymentIdentifierInUse):
        await ledger.reserve(**payment(payment_identifier=pid))  # new authorization, same id
    with pytest.raises(InvalidPaymentData):
        await ledger.replay(pid, "zz")


async def test_store_response_accepts_mapping_and_overwrites(ledger: Ledger) -> None:
    record = await ledger.reserve(**payment(payment_identifier="pid-map"))
    await ledger.store_response(record.id, 202, {"x-a": "1"}, b"first")
    await ledger.mark_failed(record.id, "settle failed")
    await ledger.store_response(record.id, 402, {"payment-response": "e30="}, b"{}")
    assert await ledger.replay("pid-map", FP) == StoredResponse(
        402, (("payment-response", "e30="),), b"{}"
    )


async def test_released_payment_identifier_is_free_again(ledger: Ledger) -> None:
    first = await ledger.reserve(**payment(payment_identifier="pid-r"))
    await ledger.release(first.id)
    assert await ledger.find_by_payment_identifier("pid-r") is None
    assert await ledger.replay("pid-r", FP) is None
    second = await ledger.reserve(**payment(payment_identifier="pid-r"))
    assert (await ledger.find_by_payment_identifier("pid-r")) == second


class Clock:
    """Unix time the test sets by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_release_stale_frees_only_old_verified_records(db: Db) -> None:
    clock = Clock(1_000_000.0)
    async with db.ledger(clock=clock) as ledger:
        await ledger.migrate()
        old = await ledger.reserve(**payment())
        settling = await ledger.reserve(**payment())
        await ledger.mark_settling(settling.id)
        clock.now += 90
        young = await ledger.reserve(**payment())
        clock.now += 10
        assert await ledger.release_stale(60) == [old.id]
        assert (await ledger.get(old.id)).state is State.RELEASED
        assert (await ledger.get(settling.id)).state is State.SETTLING
        assert (await ledger.get(young.id)).state is State.VERIFIED
        await ledger.reserve(**payment(nonce=old.nonce))  # may be tried again
        assert await ledger.release_stale(60) == []
        for bad in (-1, float("nan"), float("inf"), True, "60"):
            with pytest.raises(InvalidPaymentData):
                await ledger.release_stale(bad)  # type: ignore[arg-type]


# --- reconcile ----------------------------------------------------------------------------------


class Chain:
    """Chain facts for reconcile: receipt outcome per tx hash and used (payer, nonce) pairs."""

    def __init__(self) -> None:
        self.receipts: dict[str, str] = {}
        self.used: set[tuple[str, str]] = set()
        self.asked: list[str] = []

    async def check_tx(self, record: PaymentRecord) -> str:
        assert record.tx_hash is not None
        self.asked.append(record.tx_hash)
        return self.receipts.get(record.tx_hash, "unknown")

    async def authorization_used(self, record: PaymentRecord) -> bool:
        return (record.payer, record.nonce) in self.used


async def _settling(ledger: Ledger, tx_hash: str | None = None, **over: Any) -> PaymentRecord:
    record = await ledger.reserve(**payment(**over))
    return await ledger.mark_settling(record.id, tx_hash)


async def test_reconcile_moves_each_case(ledger: Ledger) -> None:
    chain = Chain()
    mined, reverted, lost, taken = tx(), tx(), tx(), tx()
    a = await _settling(ledger, mined)
    b = await _settling(ledger, reverted)
    c = await _settling(ledger)  # crashed before broadcast; chain says used
    d = await _settling(ledger)  # crashed before broadcast; unused, still valid
    e = await _settling(ledger, valid_before=1)  # unused and expired
    f = await _settling(ledger, lost)  # receipt unknown, not used, valid: wait
    g = await _settling(ledger, taken)  # reverted, but the authorization was used by another tx
    untouched = await ledger.reserve(**payment())  # verified: not reconcile's business
    chain.receipts.update({mined: "mined_ok", reverted: "reverted", taken: "reverted"})
    chain.used.update({(c.payer, c.nonce), (g.payer, g.nonce)})

    summary = await ledger.reconcile(chain.check_tx, chain.authorization_used)

    assert sorted(summary.settled) == sorted([a.id, c.id, g.id])
    assert sorted(summary.failed) == sorted([b.id, e.id])
    assert sorted(summary.pending) == sorted([d.id, f.id])
    assert summary.errors == {}
    assert sorted(chain.asked) == sorted([mined, reverted, lost, taken])
    for rid in (a.id, c.id, g.id):
        rec = await ledger.get(rid)
        assert rec.state is State.SETTLED
        assert rec.reconciled_at is not None
    assert (await ledger.get(c.id)).tx_hash is None  # reconcile never invents a transaction
    assert (await ledger.get(b.id)).error == "reconcile: transaction reverted"
    assert (await ledger.get(e.id)).error == "reconcile: authorization expired unused"
    assert (await ledger.get(untouched.id)).state is State.VERIFIED
    assert {r.id for r in await ledger.pending_settlements()} == {d.id, f.id}

    again = await ledger.reconcile(chain.check_tx, chain.authorization_used)
    assert (again.settled, again.failed, sorted(again.pending)) == ([], [], sorted([d.id, f.id]))


async def test_reconcile_without_authorization_checker_leaves_hashless(ledger: Ledger) -> None:
    chain = Chain()
    hashless = await _settling(ledger, valid_before=1)
    summary = await ledger.reconcile(chain.check_tx)
    assert summary.pending == [hashless.id]
    assert chain.asked == []


async def test_reconcile_checker_failure_is_reported_and_kept(ledger: Ledger) -> None:
    mined = tx()
    broken = await _settling(ledger, tx())
    fine = await _settling(ledger, mined)

    async def check_tx(record: PaymentRecord) -> str:
        if record.id == broken.id:
            raise ConnectionError("rpc down")
        return "mined_ok"

    summary = await ledger.reconcile(check_tx)
    assert summary.settled == [fine.id]
    assert summary.errors == {broken.id: "ConnectionError: rpc down"}
    assert (await ledger.get(broken.id)).state is State.SETTLING


async def test_reconcile_rejects_nonsense_from_checkers(ledger: Ledger) -> None:
    await _settling(ledger, tx())

    async def says_maybe(_record: PaymentRecord) -> str:
        return "maybe"

    async def says_yes_string(_record: PaymentRecord) -> bool:
        return "yes"  # type: ignore[return-value]

    with pytest.raises(InvalidPaymentData):
        await ledger.reconcile(says_maybe)

    async def unknown(_record: PaymentRecord) -> str:
        return "unknown"

    with pytest.raises(InvalidPaymentData):
        await ledger.reconcile(unknown, says_yes_string)


async def test_reconcile_names_the_transaction_of_a_hashless_settlement(ledger: Ledger) -> None:
    chain = Chain()
    found, stored = tx(), tx()
    hashless = await _settling(ledger)  # killed after the send, before the hash was written
    with_hash = await _settling(ledger, stored)
    unused = await _settling(ledger)
    chain.used.add((hashless.payer, hashless.nonce))
    chain.receipts[stored] = "mined_ok"
    asked: list[str] = []

    async def find_tx(record: PaymentRecord) -> str | None:
        asked.append(record.id)
        return found.upper().replace("0X", "0x")  # normalised on the way in

    summary = await ledger.reconcile(chain.check_tx, chain.authorization_used, find_tx)
    assert sorted(summary.settled) == sorted([hashless.id, with_hash.id])
    assert summary.pending == [unused.id]
    assert asked == [hashless.id]  # only a settled record without a hash is looked up
    assert (await ledger.get(hashless.id)).tx_hash == found
    assert (await ledger.get(with_hash.id)).tx_hash == stored


async def test_reconcile_settles_without_a_hash_when_none_is_found(ledger: Ledger) -> None:
    chain = Chain()
    record = await _settling(ledger)
    chain.used.add((record.payer, record.nonce))

    async def nothing(_record: PaymentRecord) -> str | None:
        return None

    summary = await ledger.reconcile(chain.check_tx, chain.authorization_used, nothing)
    assert summary.settled == [record.id]
    done = await ledger.get(record.id)
    assert (done.state, done.tx_hash) == (State.SETTLED, None)


async def test_reconcile_tx_finder_failure_or_nonsense(ledger: Ledger) -> None:
    chain = Chain()
    record = await _settling(ledger)
    chain.used.add((record.payer, record.nonce))

    async def down(_record: PaymentRecord) -> str | None:
        raise ConnectionError("logs unavailable")

    summary = await ledger.reconcile(chain.check_tx, chain.authorization_used, down)
    assert summary.errors == {record.id: "ConnectionError: logs unavailable"}
    assert (await ledger.get(record.id)).state is State.SETTLING  # tried again next run

    async def garbage(_record: PaymentRecord) -> str | None:
        return "not-a-hash"

    with pytest.raises(InvalidPaymentData):
        await ledger.reconcile(chain.check_tx, chain.authorization_used, garbage)
    assert (await ledger.get(record.id)).state is State.SETTLING


# --- locks in front of the database -------------------------------------------------------------


async def test_redis_lock_refuses_before_the_database(
    tmp_path: Path, clean_redis: Redis, redis_prefix: str
) -> None:
    locks = RedisLocks(clean_redis, prefix=redis_prefix)
    a = Ledger(tmp_path / "a.sqlite3", locks=locks)
    b = Ledger(tmp_path / "b.sqlite3", locks=locks)  # another database: only the lock can refuse
    try:
        await a.migrate()
        await b.migrate()
        same = payment()
        first = await a.reserve(**same)
        key = redis_prefix + first.authorization_key
        pttl = await clean_redis.pttl(key)
        assert 0 < pttl <= 3600_000
        with pytest.raises(AuthorizationInUse) as info:
            await b.reserve(**same)
        assert (info.value.record_id, info.value.state) == (None, None)
        await a.release(first.id)
        assert await clean_redis.exists(key) == 0
        second = await b.reserve(**same)
        await b.mark_failed(second.id, "boom")  # terminal: the lock is dropped
        assert await clean_redis.exists(key) == 0
    finally:
        await a.close()
        await b.close()


async def test_lock_is_released_when_the_database_refuses(db: Db) -> None:
    first_locks, second_locks = InProcessLocks(), InProcessLocks()
    async with db.ledger(locks=first_locks) as one, db.ledger(locks=second_locks) as two:
        await one.migrate()
        same = payment(valid_before=1)  # expired: the lock still gets at least a second
        record = await one.reserve(**same)
        with pytest.raises(AuthorizationInUse) as info:
            await two.reserve(**same)
        assert info.value.record_id == record.id
        handle = await second_locks.acquire(record.authorization_key, 5)  # not leaked
        assert await second_locks.release(handle)
