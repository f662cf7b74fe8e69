"""PaymentMiddleware on a real anvil: challenges, both versions, flows, buffering, idempotency."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak
from paylab import PRICE, Gateway, build_gateway, lab_gateway, local_facilitator

from x402gw.config import InvalidRouteConfig, PaymentConfig, PricedRoute
from x402gw.facilitator import LocalFacilitator, reconcile_ledger
from x402gw.ledger import Ledger, State
from x402gw.middleware import PaymentMiddleware
from x402gw.signer_lock import FileSignerLock
from x402gw.wire import (
    ExactEvmPayload,
    PaymentPayload,
    PaymentRequiredV1,
    decode_payment_required,
    decode_settle_response,
    encode_payment_payload,
)

if TYPE_CHECKING:
    from conftest import EvmLab, PayFunction


URL = "http://testserver"


@pytest.fixture
async def gateway(evm: EvmLab, tmp_path: Path) -> AsyncIterator[Gateway]:
    """The paid test app behind PaymentMiddleware with a LocalFacilitator on the lab anvil."""
    async with lab_gateway(evm, tmp_path / "l.sqlite3") as gw:
        yield gw


async def _records(gw: Gateway) -> list[State]:
    return [record.state for record in await gw.ledger.records()]


def _payment_header(payload: object) -> dict[str, str]:
    assert isinstance(payload, PaymentPayload)
    return {"PAYMENT-SIGNATURE": encode_payment_payload(payload)}


# --- challenges -------------------------------------------------------------------------------


async def test_no_payment_gets_both_challenge_forms(gateway: Gateway, evm: EvmLab) -> None:
    async with gateway.client() as http:
        r = await http.get("/paid?q=1")
    assert r.status_code == 402
    assert r.headers["cache-control"] == "no-store"
    exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"PAYMENT-REQUIRED", "PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"}
    required = decode_payment_required(r.headers["payment-required"])
    assert required.accepts == [gateway.routes[0].requirements()]
    assert required.accepts[0].amount == str(PRICE)
    assert required.accepts[0].pay_to == evm.merchant
    assert required.resource is not None
    assert required.resource.url == f"{URL}/paid?q=1"
    assert required.extensions is not None
    assert "payment-identifier" in required.extensions
    v1 = PaymentRequiredV1.model_validate(r.json())
    assert v1.x402_version == 1
    assert v1.error == "Payment required"
    assert v1.accepts[0].network == "anvil"
    assert v1.accepts[0].max_amount_required == str(PRICE)
    assert v1.accepts[0].resource == f"{URL}/paid?q=1"
    assert gateway.calls["paid"] == 0


async def test_options_and_free_routes_pass_through(gateway: Gateway) -> None:
    async with gateway.client() as http:
        options = await http.options("/paid")
        free = await http.get("/free")
    assert options.status_code != 402
    assert "payment-required" not in options.headers
    assert free.status_code == 200
    assert free.text == "free"


# --- paid flows -------------------------------------------------------------------------------


async def test_v2_payment_settles_then_serves(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    payload = await pay(evm.payer, gateway.routes[0].requirements())
    before_payer, before_merchant = evm.balance(evm.payer.address), evm.balance(evm.merchant)
    async with gateway.client() as http:
        r = await http.get("/paid", headers=_payment_header(payload))
    assert r.status_code == 200, r.text
    assert r.json()["report"] == "sunny"
    assert r.headers["cache-control"] == "private"
    assert "x-payment-response" not in r.headers
    receipt = decode_settle_response(r.headers["payment-response"])
    assert receipt.success
    assert receipt.network == evm.network
    assert receipt.payer == evm.payer.address
    assert evm.balance(evm.payer.address) == before_payer - PRICE
    assert evm.balance(evm.merchant) == before_merchant + PRICE
    tx = evm.anvil.rpc("eth_getTransactionReceipt", receipt.transaction)
    assert int(tx["status"], 16) == 1
    assert await _records(gateway) == [State.SETTLED]
    assert gateway.calls["paid"] == 1


async def test_v1_payment_uses_x_payment_headers(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    offer = gateway.routes[0].requirements_v1(f"{URL}/paid")
    assert offer is not None
    payload = await pay(evm.payer, offer)
    before = evm.balance(evm.merchant)
    async with gateway.client() as http:
        r = await http.get("/paid", headers={"X-PAYMENT": encode_payment_payload(payload)})
    assert r.status_code == 200, r.text
    assert "payment-response" not in r.headers
    receipt = decode_settle_response(r.headers["x-payment-response"])
    assert receipt.success
    assert receipt.network == "anvil"
    assert evm.balance(evm.merchant) == before + PRICE


async def test_handler_error_status_passes_through_unsettled(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    payload = await pay(evm.payer, gateway.routes[0].requirements())
    async with gateway.client() as http:
        failed = await http.get("/fail", headers=_payment_header(payload))
        assert failed.status_code == 500
        assert failed.json() == {"error": "nope"}
        assert "payment-response" not in failed.headers
        assert evm.balance(evm.merchant) == 0
        assert await _records(gateway) == [State.RELEASED]
        # released: the same authorization can still pay for something that works
        again = await http.get("/paid", headers=_payment_header(payload))
    assert again.status_code == 200
    assert evm.balance(evm.merchant) == PRICE


async def test_handler_exception_releases_and_charges_nothing(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    payload = await pay(evm.payer, gateway.routes[0].requirements())
    async with gateway.client() as http:
        r = await http.get("/boom", headers=_payment_header(payload))
    assert r.status_code == 500
    assert r.json()["error"] == "handler_error"
    assert gateway.calls["boom"] == 1
    assert evm.balance(evm.merchant) == 0
    assert await _records(gateway) == [State.RELEASED]


async def test_streaming_response_is_buffered_and_charged(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    payload = await pay(evm.payer, gateway.routes[0].requirements())
    async with gateway.client() as http:
        r = await http.get("/stream", headers=_payment_header(payload))
    assert r.status_code == 200
    assert r.text == "".join(f"chunk{i};" for i in range(5))
    assert r.headers["content-length"] == str(len(r.content))
    assert decode_settle_response(r.headers["payment-response"]).success
    assert evm.balance(evm.merchant) == PRICE


async def test_response_over_cap_is_refused_uncharged(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    async with lab_gateway(evm, tmp_path / "l.sqlite3", max_response_bytes=1000) as gw:
        payload = await pay(evm.payer, gw.routes[0].requirements())
        async with gw.client() as http:
            r = await http.get("/big", headers=_payment_header(payload))
        assert r.status_code == 500
        assert r.json()["error"] == "response_too_large"
        assert "x" * 100 not in r.text
        assert evm.balance(evm.merchant) == 0
        assert await _records(gw) == [State.RELEASED]


async def test_post_body_reaches_handler_and_oversized_body_is_413(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    async with lab_gateway(evm, tmp_path / "l.sqlite3", max_request_body_bytes=100) as gw:
        payload = await pay(evm.payer, gw.routes[1].requirements())
        async with gw.client() as http:
            ok = await http.post("/echo", content=b"hello body", headers=_payment_header(payload))
            assert ok.status_code == 200
            assert ok.json() == {"got": "hello body"}
            payload2 = await pay(evm.payer, gw.routes[1].requirements())
            big = await http.post("/echo", content=b"y" * 101, headers=_payment_header(payload2))
        assert big.status_code == 413
        assert big.json()["error"] == "request_body_too_large"
        assert gw.calls["echo"] == 1
        assert evm.balance(evm.merchant) == PRICE


async def test_upfront_route_settles_before_handler(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    seen: list[int] = []

    payload = await pay(evm.payer, gateway.routes[6].requirements())
    original = gateway.app.app

    async def spy(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(evm.balance(evm.merchant))
        await original(scope, receive, send)

    gateway.app.app = spy
    async with gateway.client() as http:
        r = await http.post("/upfront", headers=_payment_header(payload))
    assert r.status_code == 200
    assert r.json() == {"side_effect": "done"}
    assert seen == [PRICE]  # the money had moved when the handler started
    assert decode_settle_response(r.headers["payment-response"]).success
    assert r.headers["cache-control"] == "private"


async def test_upfront_settlement_failure_never_runs_handler(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    broke = Account.create()
    evm.anvil.set_eth_balance(broke.address, 10**18)
    payload = await pay(broke, gateway.routes[6].requirements())
    # verification would refuse an empty account too; skip it to reach settlement
    facilitator = gateway.facilitator
    assert isinstance(facilitator, LocalFacilitator)
    result = await facilitator.settle(payload, gateway.routes[6].requirements())
    assert not result.success
    assert result.error_reason == "invalid_exact_evm_insufficient_balance"
    async with gateway.client() as http:
        r = await http.post("/upfront", headers=_payment_header(payload))
    assert r.status_code == 402
    assert gateway.calls["upfront"] == 0


async def test_settlement_failure_discards_buffered_body(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    payload = await pay(evm.payer, gateway.routes[0].requirements())
    original = gateway.app.app
    drain = keccak(text="transfer(address,uint256)")[:4] + abi_encode(
        ["address", "uint256"], [evm.operator.address, evm.balance(evm.payer.address)]
    )

    async def drains_payer(scope, receive, send):  # type: ignore[no-untyped-def]
        # the payer empties the wallet while the handler runs: settlement must fail
        await asyncio.to_thread(evm.anvil.transact, evm.payer, evm.token, drain)
        await original(scope, receive, send)

    gateway.app.app = drains_payer
    async with gateway.client() as http:
        r = await http.get("/paid", headers=_payment_header(payload))
    assert r.status_code == 402
    assert "sunny" not in r.text
    assert gateway.calls["paid"] == 1
    receipt = decode_settle_response(r.headers["payment-response"])
    assert not receipt.success
    assert receipt.error_reason == "invalid_exact_evm_insufficient_balance"
    required = decode_payment_required(r.headers["payment-required"])
    assert required.error is not None
    assert "insufficient_balance" in required.error
    assert evm.balance(evm.merchant) == 0
    assert await _records(gateway) == [State.FAILED]


# --- payment-identifier idempotency -------------------------------------------------------------


def _with_pid(payload: object, pid: str) -> PaymentPayload:
    assert isinstance(payload, PaymentPayload)
    return payload.model_copy(
        update={"extensions": {"payment-identifier": {"info": {"required": False, "id": pid}}}}
    )


async def test_payment_identifier_replays_without_second_charge(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    pid = "pay_0123456789abcdef"
    offer = gateway.routes[0].requirements()
    first = _with_pid(await pay(evm.payer, offer), pid)
    retry = _with_pid(await pay(evm.payer, offer), pid)  # a client retry signs a fresh nonce
    async with gateway.client() as http:
        a = await http.get("/paid?q=x", headers=_payment_header(first))
        b = await http.get("/paid?q=x", headers=_payment_header(retry))
        other = await http.get("/paid?q=y", headers=_payment_header(retry))
    assert a.status_code == b.status_code == 200
    assert a.content == b.content
    assert a.headers["payment-response"] == b.headers["payment-response"]
    assert gateway.calls["paid"] == 1
    assert evm.balance(evm.merchant) == PRICE
    assert other.status_code == 409
    assert other.json()["error"] == "payment_identifier_conflict"


async def test_malformed_payment_identifier_is_400(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    payload = _with_pid(await pay(evm.payer, gateway.routes[0].requirements()), "short!")
    async with gateway.client() as http:
        r = await http.get("/paid", headers=_payment_header(payload))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_payment_identifier"
    assert gateway.calls["paid"] == 0


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"method": "GE T"}, "method"),
        ({"path": "paid"}, "start with"),
        ({"path": "/a*/b"}, "only at the end"),
        ({"pay_to": "0x123"}, "pay_to"),
        ({"max_timeout_seconds": 3}, "max_timeout_seconds"),
        ({"price": "$0.0000001"}, "decimal places"),
        ({"price": 0}, "above zero"),
        ({"network": "eip155:999999"}, "no asset"),
        ({"network": "nonsense"}, "unknown EVM network"),
    ],
)
def test_bad_route_config_is_refused(
    evm: EvmLab, changes: dict[str, object], fragment: str
) -> None:
    base: dict[str, object] = {
        "method": "GET",
        "path": "/paid",
        "price": "$0.01",
        "pay_to": evm.merchant,
        "network": evm.network,
        "asset": evm.asset,
    }
    if "network" in changes:
        base["asset"] = None
    base.update(changes)
    with pytest.raises(InvalidRouteConfig, match=fragment):
        PricedRoute(**base)  # type: ignore[arg-type]


def test_route_patterns_and_methods(evm: EvmLab) -> None:
    route = PricedRoute("get", "/items/{id}/raw*", "$0.01", evm.merchant, evm.network, evm.asset)
    assert route.method == "GET"
    assert route.amount == 10_000
    assert route.matches("GET", "/items/42/raw")
    assert route.matches("GET", "/items/42/raw/deeper")
    assert not route.matches("POST", "/items/42/raw")
    assert not route.matches("GET", "/items/4/2/raw")
    assert route.requirements().extra == {"name": "USD Coin", "version": "2"}


async def test_payment_config_needs_routes_and_positive_caps(evm: EvmLab, tmp_path: Path) -> None:
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    ledger = Ledger(tmp_path / "l.sqlite3")
    route = PricedRoute("GET", "/p", 1, evm.merchant, evm.network, evm.asset)
    try:
        with pytest.raises(InvalidRouteConfig):
            PaymentConfig(routes=[], facilitator=facilitator, ledger=ledger)
        with pytest.raises(InvalidRouteConfig):
            PaymentConfig(
                routes=[route], facilitator=facilitator, ledger=ledger, max_response_bytes=0
            )
    finally:
        await facilitator.aclose()
        await ledger.close()


def test_cache_control_merges_private() -> None:
    from x402gw._flow import paid_headers
    from x402gw.wire import SettleResponse

    settle = SettleResponse(success=True, transaction="0x" + "ab" * 32, network="eip155:1")
    merged = dict(paid_headers([(b"cache-control", b"public, max-age=60")], settle, 2))
    assert merged[b"cache-control"] == b"max-age=60, private"
    kept = dict(paid_headers([(b"cache-control", b"no-store")], settle, 1))
    assert kept[b"cache-control"] == b"no-store"
    assert b"x-payment-response" in kept
    assert json.loads(base64.b64decode(merged[b"payment-response"]))["success"] is True


async def test_head_is_priced_like_get(gateway: Gateway) -> None:
    async with gateway.client() as http:
        r = await http.head("/paid")
    assert r.status_code == 402
    assert "payment-required" in r.headers
    assert gateway.calls["paid"] == 0


async def test_odd_paths_are_stored_printably(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    payload = await pay(evm.payer, gateway.routes[0].requirements())
    async with gateway.client() as http:
        r = await http.get("/paid?q=" + "%0A" * 3 + "z" * 3000, headers=_payment_header(payload))
    assert r.status_code == 200
    [record_state] = await _records(gateway)
    assert record_state is State.SETTLED


def test_ledger_resource_is_printable_and_bounded() -> None:
    from x402gw._flow import ledger_resource

    text = ledger_resource("GET", "/a\nb" + "c" * 5000)
    assert text.startswith("GET /a?b")
    assert len(text) == 2000
    assert text.isprintable()


async def test_local_config_builds_the_default_stack(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    route = PricedRoute("GET", "/paid", PRICE, evm.merchant, evm.network, evm.asset)
    config = PaymentConfig.local(
        [route],
        rpc_url=evm.anvil.url,
        operator_key=evm.operator.key.hex(),
        ledger_url=f"sqlite:///{tmp_path / 'l.db'}",
        signer_lock=str(tmp_path / "operator.lock"),
    )
    assert isinstance(config.facilitator, LocalFacilitator)
    lock = config.facilitator.settler.signer_lock
    assert isinstance(lock, FileSignerLock)
    assert lock.path == tmp_path / "operator.lock"
    from paylab import Calls, paid_app

    app = PaymentMiddleware(paid_app(Calls()), config)
    payload = await pay(evm.payer, route.requirements())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=URL) as http:
        r = await http.get("/paid", headers=_payment_header(payload))
    assert r.status_code == 200
    assert evm.balance(evm.merchant) == PRICE
    assert (tmp_path / "operator.lock").exists()  # the broadcast went through the lock
    await config.facilitator.aclose()
    await config.ledger.close()
    other = PricedRoute("GET", "/x", PRICE, evm.merchant, "eip155:8453")
    with pytest.raises(InvalidRouteConfig, match="one chain"):
        PaymentConfig.local([route, other], rpc_url=evm.anvil.url, operator_key="0x" + "11" * 32)


async def test_pending_settlement_is_kept_and_reconciled_by_hash(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    facilitator = LocalFacilitator.from_rpc(
        evm.anvil.url, evm.operator, evm.network, receipt_timeout=0.5
    )
    gw = build_gateway(facilitator, evm.merchant, evm.network, evm.asset, tmp_path / "l.db")
    try:
        await gw.app.startup()
        payload = await pay(evm.payer, gw.routes[0].requirements())
        evm.anvil.rpc("evm_setAutomine", False)
        try:
            async with gw.client() as http:
                r = await http.get("/paid", headers=_payment_header(payload))
            assert r.status_code == 402
            assert "sunny" not in r.text
            receipt = decode_settle_response(r.headers["payment-response"])
            assert receipt.error_reason == "settlement_pending"
            [record] = await gw.ledger.pending_settlements()
            assert record.tx_hash == receipt.transaction
            evm.anvil.rpc("evm_mine")
        finally:
            evm.anvil.rpc("evm_setAutomine", True)
        summary = await reconcile_ledger(gw.ledger, facilitator.client)
        assert summary.settled == [record.id]
        assert (await gw.ledger.get(record.id)).state is State.SETTLED
        assert evm.balance(evm.merchant) == PRICE
    finally:
        await facilitator.aclose()
        await gw.ledger.close()


async def test_hashless_settling_record_is_reconciled_with_its_transaction(
    gateway: Gateway, evm: EvmLab, pay: PayFunction
) -> None:
    """A crash after the send but before any hash was written leaves `settling` without a hash:
    reconcile sees the authorization used and names its transaction from the token's log."""
    facilitator = gateway.facilitator
    assert isinstance(facilitator, LocalFacilitator)
    await gateway.app.startup()
    requirements = gateway.routes[0].requirements()
    payload = await pay(evm.payer, requirements)
    auth = ExactEvmPayload.parse(payload.payload).authorization
    record = await gateway.ledger.reserve(
        scheme="exact",
        network=evm.network,
        asset=evm.token,
        payer=auth.from_,
        pay_to=evm.merchant,
        amount=PRICE,
        nonce=auth.nonce,
        valid_before=int(auth.valid_before),
        resource="GET /paid",
        fingerprint="ab" * 32,
    )
    await gateway.ledger.mark_settling(record.id)  # written ahead; then the process "died"
    settled = await facilitator.settle(payload, requirements)  # the send that got through
    assert settled.success
    summary = await reconcile_ledger(gateway.ledger, facilitator.client)
    assert summary.settled == [record.id]
    done = await gateway.ledger.get(record.id)
    assert (done.state, done.tx_hash) == (State.SETTLED, settled.transaction)
    assert done.reconciled_at is not None
