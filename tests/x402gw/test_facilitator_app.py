"""FacilitatorApp over a LocalFacilitator: the facilitator HTTP API, authentication, malformed
input, outages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from paylab import PRICE, local_facilitator, proxy_to

from x402gw.errors import FacilitatorConfigError
from x402gw.facilitator import FacilitatorError, HttpFacilitator, LocalFacilitator
from x402gw.facilitator_app import FacilitatorApp
from x402gw.wire import (
    FacilitatorRequest,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)

if TYPE_CHECKING:
    from conftest import EvmLab, OfferFactory, PayFunction


TOKEN = "t0ken-for-the-facilitator-app"
NEXT_TOKEN = "the-next-token-after-rotation"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def allowed(evm: EvmLab) -> list[tuple[str, str]]:
    return [(evm.token, evm.merchant)]


@pytest.fixture
async def http(evm: EvmLab) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process, authenticated client of FacilitatorApp(LocalFacilitator on anvil)."""
    facilitator = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=allowed(evm)
    )
    app = FacilitatorApp(facilitator, tokens=[TOKEN, NEXT_TOKEN], max_body_bytes=8192)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://fac", headers=BEARER
    ) as client:
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
        facilitator = LocalFacilitator.from_rpc(
            proxy.url, evm.operator, evm.network, allowed_payments=allowed(evm)
        )
        transport = httpx.ASGITransport(app=FacilitatorApp(facilitator, tokens=TOKEN))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://fac", headers=BEARER
        ) as http:
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


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-of-the-right-length",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        f"{TOKEN}",
        "Bearer ",
        f"Bearer {TOKEN.upper()}",
    ],
)
async def test_requests_without_a_valid_bearer_token_are_401(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction, authorization: str | None
) -> None:
    facilitator = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=allowed(evm)
    )
    transport = httpx.ASGITransport(app=FacilitatorApp(facilitator, tokens=[TOKEN, NEXT_TOKEN]))
    headers = {} if authorization is None else {"Authorization": authorization}
    body = await _body(pay, evm, offer())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fac") as http:
            answers = [
                await http.post("/settle", json=body, headers=headers),
                await http.post("/verify", json=body, headers=headers),
                await http.get("/supported", headers=headers),
                await http.get("/nowhere", headers=headers),
            ]
    finally:
        await facilitator.aclose()
    for r in answers:
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "unauthorized"
    assert evm.balance(evm.merchant) == 0  # nothing was settled


async def test_every_configured_token_is_accepted(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction
) -> None:
    facilitator = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=allowed(evm)
    )
    transport = httpx.ASGITransport(app=FacilitatorApp(facilitator, tokens=[TOKEN, NEXT_TOKEN]))
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            for token in (TOKEN, NEXT_TOKEN):
                remote = HttpFacilitator("http://fac", bearer_token=token, client=client)
                assert (await remote.supported()).kinds
                requirements = offer()
                payload = await pay(evm.payer, requirements)
                assert (await remote.verify(payload, requirements)).is_valid
            wrong = HttpFacilitator("http://fac", bearer_token="not-" + TOKEN, client=client)
            with pytest.raises(FacilitatorError) as caught:
                await wrong.supported()
            assert caught.value.status == 401
    finally:
        await facilitator.aclose()


async def test_the_app_is_not_built_without_authentication_or_allow_list(evm: EvmLab) -> None:
    open_ = local_facilitator(evm.anvil.url, evm.operator, evm.network)
    listed = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=allowed(evm)
    )
    try:
        with pytest.raises(FacilitatorConfigError, match="allowed_payments"):
            FacilitatorApp(open_, tokens=[TOKEN])  # would pay gas for any asset and payTo
        with pytest.raises(FacilitatorConfigError, match="allowed_payments"):
            FacilitatorApp(open_, allow_unauthenticated=True)
        for options in (
            {},
            {"tokens": []},
            {"tokens": ["short"]},
            {"tokens": [TOKEN, "has a space in it here"]},
            {"tokens": [TOKEN + "\r\nX-Evil: 1"]},
            {"tokens": [TOKEN], "allow_unauthenticated": True},
        ):
            with pytest.raises(FacilitatorConfigError):
                FacilitatorApp(listed, **options)
        with pytest.raises(FacilitatorConfigError):
            HttpFacilitator("http://fac", bearer_token="two words")
        with pytest.raises(FacilitatorConfigError):
            HttpFacilitator("http://fac", bearer_token=TOKEN, auth_headers=_no_headers)
    finally:
        await open_.aclose()
        await listed.aclose()


async def _no_headers(endpoint: str) -> dict[str, str]:
    return {}


@pytest.mark.parametrize(
    ("client", "status"),
    [
        (("127.0.0.1", 5000), 200),
        (("127.8.9.10", 5000), 200),
        (("::1", 5000), 200),
        (("203.0.113.7", 5000), 403),
        (("10.0.0.2", 5000), 403),
        (("::ffff:203.0.113.7", 5000), 403),
        (("localhost.evil.example", 5000), 403),
    ],
)
async def test_unauthenticated_mode_serves_loopback_clients_only(
    evm: EvmLab, client: tuple[str, int], status: int
) -> None:
    facilitator = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=allowed(evm)
    )
    app = FacilitatorApp(facilitator, allow_unauthenticated=True)
    transport = httpx.ASGITransport(app=app, client=client)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fac") as http:
            r = await http.get("/supported")
    finally:
        await facilitator.aclose()
    assert r.status_code == status
    if status == 403:
        assert r.json()["error"] == "forbidden"


async def test_unauthenticated_mode_refuses_a_request_without_client_address(
    evm: EvmLab,
) -> None:
    facilitator = local_facilitator(
        evm.anvil.url, evm.operator, evm.network, allowed_payments=allowed(evm)
    )
    app = FacilitatorApp(facilitator, allow_unauthenticated=True)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/supported", "headers": [], "client": None}
    try:
        await app(scope, receive, send)
    finally:
        await facilitator.aclose()
    assert sent[0]["status"] == 403
