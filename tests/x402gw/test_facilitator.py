"""LocalFacilitator on anvil, HttpFacilitator against loopback servers, and ledger reconciliation."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from eth_account import Account
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from paylab import PRICE, free_port, local_facilitator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from x402gw import exact_evm as ev
from x402gw.errors import InvalidPaymentPayload
from x402gw.facilitator import (
    FacilitatorError,
    FacilitatorUnavailable,
    HttpFacilitator,
    LocalFacilitator,
    reconcile_ledger,
)
from x402gw.facilitator_app import FacilitatorApp
from x402gw.ledger import Ledger, State
from x402gw.wire import PaymentPayload, PaymentRequirements

if TYPE_CHECKING:
    from conftest import EvmLab, OfferFactory, PayFunction


# --- LocalFacilitator -------------------------------------------------------------------------


async def test_supported_lists_v2_and_v1_kinds(local: LocalFacilitator, evm: EvmLab) -> None:
    supported = await local.supported()
    assert {(k.x402_version, k.network) for k in supported.kinds} == {
        (2, evm.network),
        (1, "anvil"),
    }
    assert supported.signers == {"eip155:*": [evm.operator.address]}


async def test_verify_then_settle_moves_funds_once(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    verified = await local.verify(payload, requirements)
    assert verified.is_valid
    assert verified.payer == evm.payer.address
    seen: list[str] = []

    async def on_broadcast(tx_hash: str) -> None:
        seen.append(tx_hash)

    settled = await local.settle(payload, requirements, on_broadcast=on_broadcast)
    assert settled.success
    assert settled.amount == str(PRICE)
    # Announced only if the receipt had to be waited for: anvil's automine usually has it at
    # once, but may answer the send a moment before the block is in (the automine-off test
    # below covers the announced path deterministically).
    assert seen in ([], [settled.transaction])
    assert evm.balance(evm.merchant) == PRICE
    again = await local.settle(payload, requirements)
    assert not again.success
    assert again.error_reason == "invalid_exact_evm_nonce_already_used"
    assert again.transaction == ""  # refused at estimation: nothing broadcast


async def test_hash_is_announced_before_waiting_for_a_later_block(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    seen: list[str] = []

    async def on_broadcast(tx_hash: str) -> None:
        seen.append(tx_hash)

    evm.anvil.rpc("evm_setAutomine", False)
    try:
        task = asyncio.create_task(local.settle(payload, requirements, on_broadcast=on_broadcast))
        deadline = time.monotonic() + 20
        while not seen:
            assert time.monotonic() < deadline, "no hash announced while the receipt is awaited"
            await asyncio.sleep(0.02)
        assert not task.done()  # still waiting for the block
        evm.anvil.rpc("evm_mine")
        settled = await task
    finally:
        evm.anvil.rpc("evm_setAutomine", True)
    assert settled.success
    assert seen == [settled.transaction]
    assert evm.balance(evm.merchant) == PRICE


async def test_other_chain_is_not_served(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    requirements = offer(network="eip155:1")
    payload = await pay(evm.payer, requirements)
    verified = await local.verify(payload, requirements)
    settled = await local.settle(payload, requirements)
    assert verified.invalid_reason == settled.error_reason
    assert verified.invalid_reason == "invalid_exact_evm_failed_to_get_network_config"


async def test_settle_rechecks_offchain_rules(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    payload = await pay(evm.payer, offer())
    settled = await local.settle(payload, offer(amount="20000"))
    assert not settled.success
    assert settled.error_reason == "invalid_exact_evm_payload_authorization_value_mismatch"
    assert evm.balance(evm.merchant) == 0


async def test_settle_in_a_later_second_rechecks_the_time_window(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    now = [0.0]
    local = local_facilitator(evm.anvil.url, evm.operator, evm.network, clock=lambda: now[0])
    try:
        requirements = offer()
        payload = await pay(evm.payer, requirements)
        valid_before = int(payload.payload["authorization"]["validBefore"])
        now[0] = valid_before - 60.0
        assert (await local.verify(payload, requirements)).is_valid
        now[0] = float(valid_before)  # verify's answer from another second must not be reused
        settled = await local.settle(payload, requirements)
        assert not settled.success
        assert settled.error_reason == ev.VALID_BEFORE
        assert evm.balance(evm.merchant) == 0
    finally:
        await local.aclose()


async def test_parallel_settles_of_one_authorization_broadcast_once(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    start = int(evm.anvil.rpc("eth_blockNumber"), 16)
    results = await asyncio.gather(*(local.settle(payload, requirements) for _ in range(5)))
    assert sum(r.success for r in results) == 1
    assert {r.error_reason for r in results if not r.success} <= {
        "authorization_in_use",
        "invalid_exact_evm_nonce_already_used",
    }
    assert int(evm.anvil.rpc("eth_blockNumber"), 16) == start + 1
    assert evm.balance(evm.merchant) == PRICE


async def test_pending_settlement_is_reported_with_its_hash(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    facilitator = LocalFacilitator.from_rpc(
        evm.anvil.url, evm.operator, evm.network, receipt_timeout=0.5
    )
    evm.anvil.rpc("evm_setAutomine", False)
    try:
        requirements = offer()
        payload = await pay(evm.payer, requirements)
        result = await facilitator.settle(payload, requirements)
        assert not result.success
        assert result.error_reason == "settlement_pending"
        assert result.transaction.startswith("0x")
        assert len(result.transaction) == 66
    finally:
        evm.anvil.rpc("anvil_dropAllTransactions")  # nothing pending may leak into other tests
        evm.anvil.rpc("evm_setAutomine", True)
        await facilitator.aclose()


# --- reconciliation -----------------------------------------------------------------------------


async def _reserve(
    ledger: Ledger, evm: EvmLab, payload: Any, requirements: PaymentRequirements
) -> str:
    auth = payload.payload["authorization"]
    record = await ledger.reserve(
        scheme="exact",
        network=evm.network,
        asset=evm.token,
        payer=auth["from"],
        pay_to=requirements.pay_to,
        amount=PRICE,
        nonce=auth["nonce"],
        valid_before=int(auth["validBefore"]),
        resource="GET /paid",
        fingerprint="0" * 64,
    )
    return record.id


async def test_reconcile_settles_by_stored_hash(
    local: LocalFacilitator, evm: EvmLab, offer: OfferFactory, pay: PayFunction, tmp_path: Path
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    unused = await pay(evm.payer, requirements)
    async with Ledger(tmp_path / "l.db") as ledger:
        await ledger.migrate()
        paid_id = await _reserve(ledger, evm, payload, requirements)
        unused_id = await _reserve(ledger, evm, unused, requirements)
        settled = await local.settle(payload, requirements)
        await ledger.mark_settling(paid_id, settled.transaction)  # crash before mark_settled
        await ledger.mark_settling(unused_id)  # crash before broadcast
        blocks = int(evm.anvil.rpc("eth_blockNumber"), 16)
        summary = await reconcile_ledger(ledger, local.client)
        assert summary.settled == [paid_id]
        assert summary.pending == [unused_id]
        assert (await ledger.get(paid_id)).state is State.SETTLED
        assert (await ledger.get(unused_id)).state is State.SETTLING
        assert int(evm.anvil.rpc("eth_blockNumber"), 16) == blocks


# --- HttpFacilitator ----------------------------------------------------------------------------


def _loopback(status: int, body: str, seen: list[dict[str, str]]) -> Starlette:
    """A facilitator stand-in answering every endpoint with ``status`` and ``body``."""

    async def answer(request: Request) -> Response:
        seen.append({"path": request.url.path, **dict(request.headers)})
        if request.method == "POST":
            json.loads(await request.body())
        return PlainTextResponse(body, status_code=status, media_type="application/json")

    return Starlette(
        routes=[
            Route(f"/{p}", answer, methods=["GET", "POST"])
            for p in ("verify", "settle", "supported")
        ]
    )


def _remote(app: Starlette, **options: Any) -> HttpFacilitator:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return HttpFacilitator("http://facilitator.test/", client=client, **options)


async def test_http_facilitator_parses_4xx_result_bodies(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    seen: list[dict[str, str]] = []
    body = json.dumps({"isValid": False, "invalidReason": "invalid_payload", "payer": "0xabc"})
    remote = _remote(_loopback(400, body, seen))
    payload = await pay(evm.payer, offer())
    verified = await remote.verify(payload, offer())
    assert verified.is_valid is False
    assert verified.invalid_reason == "invalid_payload"
    assert seen[0]["path"] == "/verify"


async def test_http_facilitator_sends_auth_headers_per_endpoint(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    seen: list[dict[str, str]] = []
    body = json.dumps({"success": True, "transaction": "0x" + "ab" * 32, "network": evm.network})
    called: list[str] = []

    async def auth(endpoint: str) -> dict[str, str]:
        called.append(endpoint)
        return {"Authorization": f"Bearer token-for-{endpoint}"}

    remote = _remote(_loopback(200, body, seen), auth_headers=auth)
    payload = await pay(evm.payer, offer())
    hashes: list[str] = []

    async def on_broadcast(tx_hash: str) -> None:
        hashes.append(tx_hash)

    settled = await remote.settle(payload, offer(), on_broadcast=on_broadcast)
    assert settled.success
    assert hashes == []  # a success carries its hash; nothing to announce ahead of it
    pending = json.dumps(
        {
            "success": False,
            "errorReason": "settlement_pending",
            "transaction": "0x" + "cd" * 32,
            "network": evm.network,
        }
    )
    waiting = _remote(_loopback(200, pending, seen), auth_headers=auth)
    result = await waiting.settle(payload, offer(), on_broadcast=on_broadcast)
    assert result.error_reason == "settlement_pending"
    assert hashes == ["0x" + "cd" * 32]
    await waiting.aclose()
    assert called == ["settle", "settle"]
    assert seen[0]["authorization"] == "Bearer token-for-settle"


@pytest.mark.parametrize(("status", "body"), [(500, "kaboom"), (200, "{}"), (404, "<html>")])
async def test_http_facilitator_raises_on_non_results(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction, status: int, body: str
) -> None:
    remote = _remote(_loopback(status, body, []))
    payload = await pay(evm.payer, offer())
    with pytest.raises(FacilitatorError) as caught:
        await remote.verify(payload, offer())
    assert caught.value.status == status
    assert caught.value.endpoint == "verify"


async def test_http_facilitator_unreachable() -> None:
    remote = HttpFacilitator(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(FacilitatorUnavailable):
            await remote.supported()
    finally:
        await remote.aclose()


async def test_http_facilitator_round_trip_through_our_app(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    token = "round-trip-token-0123456789"
    local = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=[(evm.token, evm.merchant)]
    )
    app = FacilitatorApp(local, tokens=[token])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    remote = HttpFacilitator("http://facilitator.test", client=client, bearer_token=token)
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    assert isinstance(payload, PaymentPayload)
    supported = await remote.supported()
    assert supported.kinds[0].network == evm.network
    assert (await remote.verify(payload, requirements)).is_valid
    settled = await remote.settle(payload, requirements)
    assert settled.success
    assert evm.balance(evm.merchant) == PRICE
    await client.aclose()
    await remote.aclose()  # not owned: the caller's client stays the caller's
    assert client.is_closed
    await local.aclose()


def test_from_rpc_accepts_a_private_key(evm: EvmLab) -> None:
    key = Account.create().key.hex()
    facilitator = LocalFacilitator.from_rpc(evm.anvil.url, key, "anvil")
    assert facilitator.network == evm.network
    assert facilitator.chain_id == 31337


# --- the hand-encoded digest and recovery agree with eth_account's typed-data encoder ----------

_UINT = st.integers(min_value=0, max_value=2**256 - 1)


@settings(max_examples=60, deadline=None)
@given(
    value=_UINT,
    after=_UINT,
    before=_UINT,
    nonce=st.binary(min_size=32, max_size=32),
    name=st.text(max_size=12),
    chain=st.integers(min_value=1, max_value=2**64),
    key=st.binary(min_size=32, max_size=32),
)
def test_digest_and_recovery_match_eth_account(
    value: int, after: int, before: int, nonce: bytes, name: str, chain: int, key: bytes
) -> None:
    try:
        signer = Account.from_key(key)
    except ValueError:
        return  # not a valid secp256k1 private key
    token = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    domain = ev.Domain(name, "2", chain, token)
    auth = ev.Authorization(signer.address, token, value, after, before, nonce)
    message = ev.signable(domain, auth)
    expected = keccak(b"\x19" + message.version + message.header + message.body)
    assert ev.authorization_digest(domain, auth) == expected
    signature = ev.sign_authorization(domain, auth, key)
    assert ev.recover_signer(domain, auth, signature) == signer.address
    assert Account.recover_message(message, signature=signature) == signer.address
    high_s = signature[:32] + (2**256 - 1).to_bytes(32, "big") + signature[64:]
    with pytest.raises(InvalidPaymentPayload):
        ev.recover_signer(domain, auth, high_s)
