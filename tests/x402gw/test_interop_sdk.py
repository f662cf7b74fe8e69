"""Interop with the official x402 SDK over real HTTP (uvicorn on 127.0.0.1) and a real anvil.

(a) the SDK httpx client pays an x402gw route, v2 and v1; (b) the SDK resource-server middleware
settles through x402gw's facilitator server; (c) x402gw's HttpFacilitator settles through the SDK
facilitator. Every case checks both balances on chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lab.webserver import UvicornThread
from paylab import (
    PRICE,
    Gateway,
    OnShutdown,
    build_gateway,
    local_facilitator,
    sdk_facilitator_app,
    sdk_http,
    sdk_protected_app,
)
from x402.http import x402HTTPClient

from x402gw.facilitator import HttpFacilitator
from x402gw.facilitator_app import FacilitatorApp
from x402gw.ledger import Ledger, State
from x402gw.wire import PaymentPayload, decode_settle_response, encode_payment_payload

if TYPE_CHECKING:
    from conftest import EvmLab, PayFunction


@pytest.fixture
def served_gateway(evm: EvmLab, tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    """The x402gw-protected app on uvicorn; yields (gateway, base URL)."""
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    gw = build_gateway(facilitator, evm.merchant, evm.network, evm.asset, tmp_path / "l.db")
    with UvicornThread(OnShutdown(gw.app, facilitator.aclose, gw.ledger.close)) as server:
        yield gw, server.url


def _balances(evm: EvmLab) -> tuple[int, int]:
    return evm.balance(evm.payer.address), evm.balance(evm.merchant)


def _assert_paid_once(evm: EvmLab, before: tuple[int, int]) -> None:
    assert _balances(evm) == (before[0] - PRICE, before[1] + PRICE)


async def test_sdk_client_pays_x402gw_v2(served_gateway: tuple[Gateway, str], evm: EvmLab) -> None:
    gw, url = served_gateway
    before = _balances(evm)
    async with sdk_http(evm.payer) as http:
        r = await http.get(f"{url}/paid")
    assert r.status_code == 200, r.text
    assert r.json()["report"] == "sunny"
    receipt = x402HTTPClient(None).get_payment_settle_response(r.headers.get)  # type: ignore[arg-type]
    assert receipt.success
    assert receipt.network == evm.network
    assert "x-payment-response" not in r.headers
    _assert_paid_once(evm, before)
    assert gw.calls["paid"] == 1


@pytest.mark.usefixtures("_sdk_knows_anvil")
async def test_sdk_client_pays_x402gw_v1(served_gateway: tuple[Gateway, str], evm: EvmLab) -> None:
    gw, url = served_gateway
    before = _balances(evm)
    async with sdk_http(evm.payer, v1=True) as http:
        r = await http.get(f"{url}/paid")
    assert r.status_code == 200, r.text
    assert "payment-response" not in r.headers
    receipt = decode_settle_response(r.headers["x-payment-response"])
    assert receipt.success
    assert receipt.network == "anvil"
    _assert_paid_once(evm, before)
    assert gw.calls["paid"] == 1


async def test_sdk_middleware_settles_through_our_facilitator_app(evm: EvmLab) -> None:
    facilitator = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=[(evm.token, evm.merchant)]
    )
    before = _balances(evm)
    operator_nonce = evm.anvil.rpc("eth_getTransactionCount", evm.operator.address, "latest")
    with (
        UvicornThread(
            OnShutdown(
                FacilitatorApp(facilitator, allow_unauthenticated=True),  # loopback only
                facilitator.aclose,
            )
        ) as ours,
        UvicornThread(sdk_protected_app(ours.url, evm.merchant, evm.network, evm.token)) as sdk,
    ):
        async with sdk_http(evm.payer) as http:
            unpaid = await http.get(f"{sdk.url}/free")
            r = await http.get(f"{sdk.url}/paid")
    assert unpaid.status_code == 200
    assert r.status_code == 200, r.text
    receipt = x402HTTPClient(None).get_payment_settle_response(r.headers.get)  # type: ignore[arg-type]
    assert receipt.success
    tx = evm.anvil.rpc("eth_getTransactionByHash", receipt.transaction)
    assert tx["from"].lower() == evm.operator.address.lower()  # our facilitator paid the gas
    assert int(evm.anvil.rpc("eth_getTransactionCount", evm.operator.address, "latest"), 16) == (
        int(operator_nonce, 16) + 1
    )
    _assert_paid_once(evm, before)


async def test_http_facilitator_settles_through_sdk_facilitator(
    evm: EvmLab, tmp_path: Path, pay: PayFunction
) -> None:
    before = _balances(evm)
    sdk_app = sdk_facilitator_app(evm.operator.key.hex(), evm.anvil.url, evm.network)
    with UvicornThread(sdk_app) as sdk:
        remote = HttpFacilitator(sdk.url, timeout=60)
        gw = build_gateway(remote, evm.merchant, evm.network, evm.asset, tmp_path / "l.db")
        try:
            supported = await remote.supported()
            assert any(k.network == evm.network and k.x402_version == 2 for k in supported.kinds)
            payload = await pay(evm.payer, gw.routes[0].requirements())
            assert isinstance(payload, PaymentPayload)
            async with gw.client() as http:
                r = await http.get(
                    "/paid", headers={"PAYMENT-SIGNATURE": encode_payment_payload(payload)}
                )
                replay = await http.get(
                    "/paid", headers={"PAYMENT-SIGNATURE": encode_payment_payload(payload)}
                )
            assert r.status_code == 200, r.text
            receipt = decode_settle_response(r.headers["payment-response"])
            assert receipt.success
            records = [await gw.ledger.get(i) for i in await _record_ids(gw.ledger)]
            assert [(rec.state, rec.tx_hash) for rec in records] == [
                (State.SETTLED, receipt.transaction.lower())
            ]
            # The SDK facilitator refuses the used nonce at verify; the gate then answers the
            # repeated request from its ledger (same payer, same request), charging nothing.
            assert replay.status_code == 200
            assert replay.content == r.content
            _assert_paid_once(evm, before)
            assert gw.calls["paid"] == 1
        finally:
            await gw.app.aclose()
            await remote.aclose()
            await gw.ledger.close()


async def _record_ids(ledger: Ledger) -> list[str]:
    return [r.id for r in await ledger.records(State.SETTLED)]
