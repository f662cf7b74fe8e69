"""FacilitatorApp over a LocalFacilitator: the facilitator HTTP API, malformed input, outages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from paylab import PRICE, local_facilitator, proxy_to

from x402gw.facilitator import LocalFacilitator
from x402gw.facilitator_app import FacilitatorApp
from x402gw.wire import (
    FacilitatorRequest,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)

if TYPE_CHECKING:
    from conftest import EvmLab, OfferFactory, PayFunction

pytestmark = pytest.mark.lab


@pytest.fixture
async def http(evm: EvmLab) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of FacilitatorApp(LocalFacilitator on anvil)."""
    facilitator = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    transport = httpx.ASGITransport(app=FacilitatorApp(facilitator, max_body_bytes=8192))
    async with httpx.AsyncClient(transport=transport, base_url="http://fac") as client:
        yield client
    await facilitator.aclose()


async def _body(pay: PayFunction, evm: EvmLab, requirements: Any) -> dict[str, Any]:
    payload = await pay(evm.payer, requirements)
    return FacilitatorRequest(
        x402_version=payload.x402_version,
        payment_payload=payload,
        payment_requirements=requirements,
    ).to_json_dict()


async def test_supported(http: httpx.AsyncClient, evm: EvmLab) -> None:
    r = await http.get("/supported")
    assert r.status_code == 200
    supported = SupportedResponse.model_validate(r.json())
    assert {k.network for k in supported.kinds} == {evm.network, "anvil"}


async def test_verify_and_settle_v2(
    http: httpx.AsyncClient, evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    body = await _body(pay, evm, offer())
    verified = VerifyResponse.model_validate((await http.post("/verify", json=body)).json())
    assert verified.is_valid
    r = await http.post("/settle", json=body)
    assert r.status_code == 200
    settled = SettleResponse.model_validate(r.json())
    assert settled.success
    assert settled.network == evm.network
    assert evm.balance(evm.merchant) == PRICE
    again = await http.post("/verify", json=body)
    assert again.status_code == 200  # an invalid payment is still a result, not an HTTP error
    assert again.json()["invalidReason"] == "invalid_exact_evm_nonce_already_used"


@pytest.mark.usefixtures("_sdk_knows_anvil")
async def test_settle_v1(
    http: httpx.AsyncClient, evm: EvmLab, offer_v1: Any, pay: PayFunction
) -> None:
    r = await http.post("/settle", json=await _body(pay, evm, offer_v1()))
    settled = SettleResponse.model_validate(r.json())
    assert settled.success
    assert settled.network == "anvil"
    assert evm.balance(evm.merchant) == PRICE


@pytest.mark.parametrize(
    ("path", "content", "reason_key"),
    [
        ("/verify", b"not json", "invalidReason"),
        ("/verify", b'{"x402Version": 2}', "invalidReason"),
        ("/settle", b"[]", "errorReason"),
    ],
)
async def test_malformed_requests_are_400_results(
    http: httpx.AsyncClient, path: str, content: bytes, reason_key: str
) -> None:
    r = await http.post(path, content=content)
    assert r.status_code == 400
    assert r.json()[reason_key] == "invalid_payload"


async def test_version_mismatch_is_400(
    http: httpx.AsyncClient, evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    body = await _body(pay, evm, offer())
    body["x402Version"] = 1
    r = await http.post("/verify", json=body)
    assert r.status_code == 400
    assert "differs" in r.json()["invalidMessage"]


async def test_routing_errors(http: httpx.AsyncClient) -> None:
    assert (await http.get("/nowhere")).status_code == 404
    assert (await http.get("/verify")).status_code == 405
    assert (await http.post("/supported")).status_code == 405
    big = await http.post("/settle", content=b"x" * 9000)
    assert big.status_code == 413
    assert big.json()["errorReason"] == "invalid_payload"


async def test_chain_down_is_503(evm: EvmLab, offer: OfferFactory, pay: PayFunction) -> None:
    with proxy_to(evm.anvil.port) as proxy:
        facilitator = LocalFacilitator.from_rpc(proxy.url, evm.operator, evm.network)
        transport = httpx.ASGITransport(app=FacilitatorApp(facilitator))
        async with httpx.AsyncClient(transport=transport, base_url="http://fac") as http:
            body = await _body(pay, evm, offer())
            proxy.close()
            r = await http.post("/verify", json=body)
            assert r.status_code == 503
            assert r.json()["error"] == "chain_unavailable"
            proxy.open()
            r = await http.post("/verify", json=body)
            assert r.status_code == 200
            assert json.loads(r.content)["isValid"] is True
        await facilitator.aclose()
