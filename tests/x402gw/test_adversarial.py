"""Attacks on the paid gateway: replays, parallel duplicates, tampering, bad windows, outages, garbage."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lab.ledgerdb import PG_PORT, fresh_pg_schema
from paylab import (
    PRICE,
    Gateway,
    block_number,
    build_gateway,
    header,
    lab_gateway,
    local_facilitator,
    priced_routes,
    proxy_to,
    signed,
    start_paid_server,
    stop,
    transactions_since,
)

from x402gw._flow import Problem, read_payment
from x402gw.facilitator import LocalFacilitator
from x402gw.ledger import Ledger, PaymentRecord, State
from x402gw.locks import InProcessLocks, RedisLocks
from x402gw.middleware import PaymentMiddleware
from x402gw.wire import (
    PaymentPayload,
    PaymentPayloadV1,
    decode_payment_required,
    encode_payment_payload,
)

if TYPE_CHECKING:
    from conftest import EvmLab, PayFunction

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def gateway(evm: EvmLab, tmp_path: Path) -> AsyncIterator[Gateway]:
    """The paid test app behind PaymentMiddleware with a LocalFacilitator on the lab anvil."""
    async with lab_gateway(evm, tmp_path / "l.sqlite3") as gw:
        yield gw


async def error_of(gw: Gateway, payload: PaymentPayload, path: str = "/paid") -> tuple[int, str]:
    async with gw.client() as http:
        r = await http.get(path, headers=header(payload))
    if r.status_code != 402:
        return r.status_code, r.text
    required = decode_payment_required(r.headers["payment-required"])
    assert r.json()["error"] == required.error  # the v1 body and the v2 header agree
    return r.status_code, required.error or ""


# --- replay and duplicates ----------------------------------------------------------------------


async def test_replay_after_settlement_runs_nothing_and_moves_nothing(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    """The same signed payment again: the same request gets the stored answer (its content was
    paid for), another request is refused; neither runs the handler or sends a transaction."""
    payload = await pay(evm.payer, gateway.routes[0].requirements())
    assert isinstance(payload, PaymentPayload)
    async with gateway.client() as http:
        first = await http.get("/paid", headers=header(payload))
        again = await http.get("/paid", headers=header(payload))
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["payment-response"] == first.headers["payment-response"]
    start = block_number(evm)
    status, error = await error_of(gateway, payload, "/paid?q=other")
    assert status == 402
    assert error.split(":")[0] in {"authorization_in_use", "invalid_exact_evm_nonce_already_used"}
    assert gateway.calls["paid"] == 1
    assert transactions_since(evm, start) == []
    assert evm.balance(evm.merchant) == PRICE


async def _ten_in_parallel(gw: Gateway, evm: EvmLab, pay: PayFunction) -> None:
    payload = await pay(evm.payer, gw.routes[0].requirements())
    assert isinstance(payload, PaymentPayload)
    start = block_number(evm)
    async with gw.client() as http:
        responses = await asyncio.gather(
            *(http.get("/paid", headers=header(payload)) for _ in range(10))
        )
    # One run and one charge; a duplicate gets 402 while the first is in flight, or, once it
    # has settled, the same answer again (the same signed authorization replays, never re-runs).
    paid = [r for r in responses if r.status_code == 200]
    assert paid
    assert all(r.status_code in (200, 402) for r in responses)
    assert {(r.content, r.headers["payment-response"]) for r in paid} == {
        (paid[0].content, paid[0].headers["payment-response"])
    }
    for r in responses:
        if r.status_code == 402:
            error = decode_payment_required(r.headers["payment-required"]).error or ""
            assert error.split(":")[0] in {
                "authorization_in_use",
                "invalid_exact_evm_nonce_already_used",
                "settlement_pending",  # the first is settling right now
            }
    assert gw.calls["paid"] == 1
    mined = transactions_since(evm, start)
    assert len(mined) == 1  # exactly one transaction, and no reverted one
    assert int(mined[0]["status"], 16) == 1
    assert evm.balance(evm.merchant) == PRICE


async def test_one_signature_ten_times_in_parallel(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    await _ten_in_parallel(gateway, evm, pay)


async def _with_locks(evm: EvmLab, tmp_path: Path, pay: PayFunction, locks: Any) -> None:
    async with lab_gateway(evm, tmp_path / "l.db", locks=locks) as gw:
        await _ten_in_parallel(gw, evm, pay)


async def test_ten_in_parallel_with_in_process_locks(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    await _with_locks(evm, tmp_path, pay, InProcessLocks())


async def test_ten_in_parallel_with_redis_locks(
    evm: EvmLab, tmp_path: Path, pay: PayFunction, clean_redis: Any, redis_prefix: str
) -> None:
    await _with_locks(evm, tmp_path, pay, RedisLocks(clean_redis, prefix=redis_prefix))


# --- tampering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", "1"), ("pay_to", "0x000000000000000000000000000000000000dEaD"), ("asset", None)],
)
async def test_tampered_accepted_matches_no_offer(
    gateway: Gateway, evm: EvmLab, field: str, value: str | None
) -> None:
    offer = gateway.routes[0].requirements()
    tampered = offer.model_copy(update={field: value or evm.operator.address})
    status, error = await error_of(gateway, signed(evm, tampered))
    assert (status, error) == (402, "No matching payment requirements")
    assert gateway.calls["paid"] == 0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"value": PRICE - 1}, "invalid_exact_evm_payload_authorization_value_mismatch"),
        ({"value": PRICE + 1}, "invalid_exact_evm_payload_authorization_value_mismatch"),
        (
            {"to": "0x000000000000000000000000000000000000dEaD"},
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        ({"valid_before": 1_000}, "invalid_exact_evm_payload_authorization_valid_before"),
        ({"valid_after": 4_000_000_000}, "invalid_exact_evm_payload_authorization_valid_after"),
    ],
)
async def test_tampered_or_out_of_window_authorizations(
    gateway: Gateway, evm: EvmLab, changes: dict[str, Any], reason: str
) -> None:
    start = block_number(evm)
    status, error = await error_of(
        gateway, signed(evm, gateway.routes[0].requirements(), **changes)
    )
    assert status == 402
    assert error.split(":")[0] == reason
    assert gateway.calls["paid"] == 0
    assert transactions_since(evm, start) == []


async def test_value_edited_after_signing_fails_signature(gateway: Gateway, evm: EvmLab) -> None:
    payload = signed(evm, gateway.routes[0].requirements())
    payload.payload["authorization"]["validBefore"] = str(int(time.time()) + 999)
    status, error = await error_of(gateway, payload)
    assert (status, error.split(":")[0]) == (402, "invalid_exact_evm_payload_signature")


async def test_wrong_eip712_domain_name(gateway: Gateway, evm: EvmLab) -> None:
    payload = signed(evm, gateway.routes[0].requirements(), domain_name="USDC")
    status, error = await error_of(gateway, payload)
    assert (status, error.split(":")[0]) == (402, "invalid_exact_evm_payload_signature")
    assert gateway.calls["paid"] == 0


async def test_insufficient_balance(gateway: Gateway, evm: EvmLab) -> None:
    poor = Account.create()
    payload = signed(evm, gateway.routes[0].requirements(), poor)
    status, error = await error_of(gateway, payload)
    assert (status, error.split(":")[0]) == (402, "invalid_exact_evm_insufficient_balance")
    assert gateway.calls["paid"] == 0


async def test_v2_payment_sent_as_v1_header_still_matches_its_version(
    gateway: Gateway, evm: EvmLab
) -> None:
    # the header name does not decide the version: the payload's x402Version does
    payload = signed(evm, gateway.routes[0].requirements())
    async with gateway.client() as http:
        r = await http.get("/paid", headers={"X-PAYMENT": encode_payment_payload(payload)})
    assert r.status_code == 200
    assert "payment-response" in r.headers


# --- RPC outage --------------------------------------------------------------------------------


async def test_rpc_down_gives_503_and_recovers(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    with proxy_to(evm.anvil.port) as proxy:
        async with lab_gateway(evm, tmp_path / "l.db", rpc_url=proxy.url) as gw:
            await gw.app.startup()
            payload = await pay(evm.payer, gw.routes[0].requirements())
            assert isinstance(payload, PaymentPayload)
            proxy.close()
            async with gw.client() as http:
                down = await http.get("/paid", headers=header(payload))
            assert down.status_code == 503
            assert down.json()["error"] == "payment_backend_unavailable"
            assert "sunny" not in down.text
            assert gw.calls["paid"] == 0
            proxy.open()
            async with gw.client() as http:
                up = await http.get("/paid", headers=header(payload))
            assert up.status_code == 200
            assert evm.balance(evm.merchant) == PRICE


async def test_ledger_lost_before_settlement_sends_nothing(evm: EvmLab, pay: PayFunction) -> None:
    """The ledger (PostgreSQL behind a relay) goes away while the handler runs: the write-ahead
    `settling` step fails, so nothing is broadcast and the buffered content is not released."""
    async with fresh_pg_schema() as db, contextlib.AsyncExitStack() as stack:
        proxy = stack.enter_context(proxy_to(PG_PORT))
        url = db.url.replace(f":{PG_PORT}/", f":{proxy.port}/")
        gw = await stack.enter_async_context(lab_gateway(evm, url, schema=db.schema))
        original = gw.app.app

        async def cuts_ledger(scope, receive, send):  # type: ignore[no-untyped-def]
            await original(scope, receive, send)
            await asyncio.to_thread(proxy.close)

        gw.app.app = cuts_ledger
        await gw.app.startup()
        payload = await pay(evm.payer, gw.routes[0].requirements())
        start = block_number(evm)
        async with gw.client() as http:
            r = await http.get("/paid", headers=header(payload))
        assert r.status_code == 503
        assert r.json()["error"] == "payment_backend_unavailable"
        assert "sunny" not in r.text
        assert gw.calls["paid"] == 1
        assert transactions_since(evm, start) == []
        assert evm.balance(evm.merchant) == 0
        proxy.open()
        gw.app.app = original
        # The release could not be written either: that authorization stays blocked (refused,
        # never charged) and the payer simply signs a fresh one.
        status, error = await error_of(gw, payload)
        assert (status, error.split(":")[0]) == (402, "authorization_in_use")
        fresh = await pay(evm.payer, gw.routes[0].requirements())
        async with gw.client() as http:
            paid = await http.get("/paid", headers=header(fresh))
        assert paid.status_code == 200
        assert evm.balance(evm.merchant) == PRICE


async def test_rpc_dies_between_handler_and_settlement(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    with proxy_to(evm.anvil.port) as proxy:
        async with lab_gateway(evm, tmp_path / "l.db", rpc_url=proxy.url) as gw:
            facilitator = gw.facilitator
            assert isinstance(facilitator, LocalFacilitator)
            original = gw.app.app

            async def cuts_rpc(scope, receive, send):  # type: ignore[no-untyped-def]
                await original(scope, receive, send)
                await asyncio.to_thread(proxy.close)

            gw.app.app = cuts_rpc
            payload = await pay(evm.payer, gw.routes[0].requirements())
            assert isinstance(payload, PaymentPayload)
            start = block_number(evm)
            async with gw.client() as http:
                r = await http.get("/paid", headers=header(payload))
            # The node refused the connection before anything was signed: truly not charged.
            assert r.status_code == 503
            assert "not charged" in r.text
            assert "sunny" not in r.text  # the buffered content is never released
            assert gw.calls["paid"] == 1
            records = await gw.ledger.records()
            assert [(rec.state, rec.error) for rec in records] == [
                (State.FAILED, "settlement_not_sent")
            ]
            proxy.open()
            assert transactions_since(evm, start) == []
            assert evm.balance(evm.merchant) == 0
            # the same authorization stays refused (nothing charged); a fresh one pays
            blocked = await error_of(gw, payload)
            assert blocked[0] == 402
            assert blocked[1].startswith("settlement_not_sent")
            fresh = await pay(evm.payer, gw.routes[0].requirements())
            gw.app.app = original
            async with gw.client() as http:
                ok = await http.get("/paid", headers=header(fresh))  # type: ignore[arg-type]
            assert ok.status_code == 200


# --- garbage headers ----------------------------------------------------------------------------

_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_HEADER_VALUES = st.one_of(
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace").decode("latin-1")),
    st.binary(max_size=300).map(_b64),
    _JSONISH.map(lambda v: _b64(repr(v).encode())),
    st.builds(
        lambda v: _b64(json.dumps({"x402Version": 2, "accepted": v, "payload": v}).encode()),
        _JSONISH,
    ),
    st.integers(min_value=16 * 1024 + 1, max_value=64 * 1024).map(lambda n: "A" * n),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_HEADER_VALUES, name=st.sampled_from(["payment-signature", "x-payment"]))
def test_read_payment_turns_garbage_into_problems(value: str, name: str) -> None:
    result = read_payment([(name.encode(), value.encode("latin-1"))], 16 * 1024)
    assert isinstance(result, Problem | PaymentPayload | PaymentPayloadV1)
    if isinstance(result, Problem):
        assert (result.status, result.code, result.challenge) == (
            402,
            "invalid_payment_header",
            True,
        )


@pytest.fixture(scope="module")
def offline_gateway(tmp_path_factory: pytest.TempPathFactory) -> PaymentMiddleware:
    """A gateway whose chain is never reached: garbage must be refused before any RPC."""
    from x402gw.networks import NETWORKS, Asset

    network = NETWORKS.register(31337, "anvil")
    asset = Asset(network, "0x5FbDB2315678afecb367f032d93F642f64180aa3", "USD Coin", "2")
    facilitator = local_facilitator("http://127.0.0.1:9", Account.create(), network)
    gw = build_gateway(
        facilitator,
        "0x000000000000000000000000000000000000bEEF",
        network,
        asset,
        tmp_path_factory.mktemp("garbage") / "l.db",
        reconcile_on_startup=False,
    )
    asyncio.run(gw.app.startup())
    return gw.app


async def _call(app: PaymentMiddleware, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/paid",
        "headers": headers,
        "query_string": b"",
    }
    await app(scope, receive, send)
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_HEADER_VALUES, name=st.sampled_from([b"payment-signature", b"x-payment"]))
def test_garbage_through_the_middleware_never_500(
    offline_gateway: PaymentMiddleware, value: str, name: bytes
) -> None:
    status, body = asyncio.run(_call(offline_gateway, [(name, value.encode("latin-1"))]))
    assert status in (400, 402), body
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    assert "error" in parsed


def test_oversized_header_is_named_in_the_error(offline_gateway: PaymentMiddleware) -> None:
    status, body = asyncio.run(_call(offline_gateway, [(b"payment-signature", b"A" * 20000)]))
    assert status == 402
    assert b"exceeds 16384 bytes" in body


# --- crash after broadcast ----------------------------------------------------------------------


def _start_server(evm: EvmLab, ledger: Path, pause: float) -> tuple[subprocess.Popen[bytes], str]:
    options = {
        "rpc": evm.anvil.url,
        "ledger": str(ledger),
        "token": evm.token,
        "merchant": evm.merchant,
        "operator-key": evm.operator.key.hex(),
    }
    return start_paid_server(options, env={"X402GW_TEST_SLEEP_AFTER_BROADCAST": str(pause)})


@pytest.mark.parametrize("automine", [True, False], ids=["receipt-at-once", "receipt-awaited"])
async def test_killed_after_broadcast_reconciles_on_restart(
    evm: EvmLab, tmp_path: Path, pay: PayFunction, automine: bool
) -> None:
    """SIGKILL right after the broadcast. With an instantly mining node the ledger usually holds
    the record in `settling` without a hash (written ahead of the send); with a node that mines
    later, the hash is stored before the receipt wait. Either way the restart settles the record
    with the right hash and never sends a second transaction."""
    ledger_path = tmp_path / "crash.sqlite3"
    offer = priced_routes(evm.merchant, evm.network, evm.asset)[0].requirements()
    payload = await pay(evm.payer, offer)
    assert isinstance(payload, PaymentPayload)
    server, url = _start_server(evm, ledger_path, pause=60)
    observer = Ledger(ledger_path)
    start = block_number(evm)
    evm.anvil.rpc("evm_setAutomine", automine)
    try:
        async with httpx.AsyncClient(timeout=90) as http:
            request = asyncio.create_task(http.get(f"{url}/paid", headers=header(payload)))
            deadline = time.monotonic() + 30
            records: list[PaymentRecord] = []
            while True:
                assert time.monotonic() < deadline, "no broadcast seen"
                await asyncio.sleep(0.05)
                records = await observer.pending_settlements()
                if automine and records and block_number(evm) > start:
                    break  # mined; the server is paused before answering
                if not automine and records and records[0].tx_hash is not None:
                    break  # in the pool, hash stored, receipt being awaited
            stop(server)  # SIGKILL: no cleanup, no response
            with pytest.raises(httpx.TransportError):
                await request
        if not automine:
            assert records[0].tx_hash is not None  # stored before the receipt wait
        # (an instantly mining node usually answers the receipt at once, and then the hash is
        # not written before the result; reconcile then finds it from the AuthorizationUsed log)
        if not automine:
            evm.anvil.rpc("evm_mine")
        mined = transactions_since(evm, start)
        assert len(mined) == 1
        assert int(mined[0]["status"], 16) == 1
        tx_hash = "0x" + bytes.fromhex(mined[0]["transactionHash"][2:]).hex()
        assert records[0].tx_hash in (None, tx_hash)
        assert evm.balance(evm.merchant) == PRICE
        evm.anvil.rpc("evm_setAutomine", True)
        after_crash = block_number(evm)

        server, url = _start_server(evm, ledger_path, pause=0)  # startup reconciles
        record = await observer.get(records[0].id)
        assert record.state is State.SETTLED
        assert record.tx_hash == tx_hash  # stored, or found from the AuthorizationUsed log
        assert record.reconciled_at is not None
        assert block_number(evm) == after_crash  # no second transaction
        async with httpx.AsyncClient(timeout=30) as http:
            replay = await http.get(f"{url}/paid", headers=header(payload))
        # The content, kept with the record before settling, reaches the payer after all.
        assert replay.status_code == 200, replay.text
        assert replay.json()["report"] == "sunny"
        assert block_number(evm) == after_crash
        assert evm.balance(evm.merchant) == PRICE
    finally:
        evm.anvil.rpc("evm_setAutomine", True)
        stop(server)
        await observer.close()


# --- two worker processes on one operator key ------------------------------------------------


async def test_two_worker_processes_share_one_key_through_the_signer_lock(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    """Two servers (as `--workers 2` runs them): one ledger, one operator key, one lock file;
    payments sent to both at once all settle, each with its own transaction."""
    options = {
        "rpc": evm.anvil.url,
        "ledger": str(tmp_path / "shared.sqlite3"),
        "token": evm.token,
        "merchant": evm.merchant,
        "operator-key": evm.operator.key.hex(),
        "signer-lock": str(tmp_path / "operator.lock"),
    }
    servers = [start_paid_server(options), start_paid_server(options)]
    offer = priced_routes(evm.merchant, evm.network, evm.asset)[0].requirements()
    payloads = [await pay(evm.payer, offer) for _ in range(30)]
    start = block_number(evm)
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            gate = asyncio.Semaphore(12)

            async def send(i: int, payload: PaymentPayload) -> int:
                async with gate:
                    url = servers[i % 2][1]
                    return (await http.get(f"{url}/paid", headers=header(payload))).status_code

            statuses = await asyncio.gather(*(send(i, p) for i, p in enumerate(payloads)))
    finally:
        for proc, _ in servers:
            stop(proc)
    assert statuses == [200] * 30
    mined = transactions_since(evm, start)
    assert len(mined) == 30
    assert all(int(m["status"], 16) == 1 for m in mined)
    assert len({m["transactionHash"] for m in mined}) == 30
    assert evm.balance(evm.merchant) == 30 * PRICE
    async with Ledger(tmp_path / "shared.sqlite3") as ledger:
        settled = await ledger.records(State.SETTLED)
    assert len(settled) == 30
    assert len({row.tx_hash for row in settled}) == 30
