"""server.payclient's pure parts: offer choice under the spend cap, and EIP-3009 signing that the
x402gw verifier accepts; plus the challenge forms it refuses."""

from __future__ import annotations

import httpx
import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.payclient import PayError, choose_offer, parse_header, pay, payer_key, sign_offer
from x402gw.exact_evm import Authorization, Domain, recover_signer
from x402gw.wire import ExactEvmPayload, PaymentRequirements

KEY = "0x" + "42" * 32
ASSET = "0x" + "aa" * 20
PAY_TO = "0x" + "bb" * 20


def offer(amount: int, scheme: str = "exact", network: str = "eip155:31337") -> PaymentRequirements:
    return PaymentRequirements(
        scheme=scheme,
        network=network,
        asset=ASSET,
        amount=str(amount),
        pay_to=PAY_TO,
        max_timeout_seconds=120,
        extra={"name": "USD Coin", "version": "2"},
    )


offers = st.lists(
    st.builds(
        offer,
        st.integers(0, 10**8),
        st.sampled_from(["exact", "upto"]),
        st.sampled_from(["eip155:31337", "eip155:8453", "solana:mainnet"]),
    ),
    max_size=6,
)


@given(offers, st.integers(0, 10**8))
def test_choice_is_the_cheapest_usable_offer_within_the_cap(
    candidates: list[PaymentRequirements], cap: int
) -> None:
    usable = [o for o in candidates if o.scheme == "exact" and o.network.startswith("eip155:")]
    if not usable or min(int(o.amount) for o in usable) > cap:
        with pytest.raises(PayError):
            choose_offer(candidates, cap)
        return
    chosen = choose_offer(candidates, cap)
    assert chosen in usable
    assert int(chosen.amount) == min(int(o.amount) for o in usable)
    assert int(chosen.amount) <= cap


def test_offers_without_a_domain_are_not_usable() -> None:
    bare = offer(10).model_copy(update={"extra": {}})
    with pytest.raises(PayError, match="no exact EVM payment"):
        choose_offer([bare], 100)


@given(st.integers(1, 10**12), st.integers(7, 10**6), st.floats(1e9, 2e9))
def test_signed_payment_recovers_to_the_payer(amount: int, timeout: int, now: float) -> None:
    chosen = offer(amount).model_copy(update={"max_timeout_seconds": timeout})
    payment = sign_offer(chosen, KEY, None, now=now)
    assert payment.accepted == chosen
    wire = ExactEvmPayload.parse(payment.payload)
    auth = Authorization.from_wire(wire)
    assert auth.value == amount
    assert auth.to.lower() == PAY_TO
    assert auth.valid_before == int(now) + timeout
    assert auth.valid_after < int(now)
    domain = Domain("USD Coin", "2", 31337, ASSET)
    signer = recover_signer(domain, auth, bytes.fromhex(wire.signature[2:]))
    assert signer == Account.from_key(KEY).address


def test_fresh_nonce_per_payment() -> None:
    first = sign_offer(offer(5), KEY, None, now=1.7e9)
    second = sign_offer(offer(5), KEY, None, now=1.7e9)
    assert first.payload["authorization"]["nonce"] != second.payload["authorization"]["nonce"]


@pytest.mark.parametrize(
    ("env", "message"),
    [({}, "is not set"), ({"BAVLIO_PAYER_KEY": "zz"}, "not a 32-byte hex private key")],
)
def test_payer_key_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(PayError, match=message):
        payer_key(env)
    assert payer_key({"BAVLIO_PAYER_KEY": KEY}) == KEY


def _server(status: int, headers: dict[str, str], body: object) -> httpx.AsyncClient:
    async def endpoint(request: Request) -> Response:
        return JSONResponse(body, status_code=status, headers=headers)

    app = Starlette(routes=[Route("/paid", endpoint, methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lab.test")


async def test_free_answers_pass_through_unpaid() -> None:
    async with _server(200, {}, {"ok": True}) as client:
        paid = await pay("POST", "http://lab.test/paid", b"{}", KEY, client=client)
    assert paid.status == 200
    assert paid.settlement is None
    assert paid.offer is None


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "402 without a PAYMENT-REQUIRED header"),
        ({"PAYMENT-REQUIRED": "%%%"}, "unreadable PAYMENT-REQUIRED header"),
    ],
)
async def test_unusable_challenges_are_refused(headers: dict[str, str], message: str) -> None:
    v1_body = {"x402Version": 1, "accepts": []}
    async with _server(402, headers, v1_body) as client:
        with pytest.raises(PayError, match=message):
            await pay("POST", "http://lab.test/paid", b"{}", KEY, client=client)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 200_000, "no reason given"),  # segfaulted json.loads at py_ecc's limit
        (b'{"error": {"code": "rate_limited", "message": "slow down"}}', "rate_limited"),
        (b'{"error": "authorization_in_use"}', "authorization_in_use"),
        (b'{"error": ' + b'"x' * 100_000 + b'"}', "no reason given"),  # cut at 64 KiB
        (b"\xff\xfe not json", "no reason given"),
    ],
)
def test_refusal_reasons_from_hostile_bodies(body: bytes, reason: str) -> None:
    from server.payclient import _reason

    assert _reason(httpx.Response(402, content=body)) == reason


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Authorization: Bearer bav_live_x", ("Authorization", "Bearer bav_live_x")),
        ("X-API-Key:k", ("X-API-Key", "k")),
        (" Idempotency-Key :  a:b ", ("Idempotency-Key", "a:b")),
    ],
)
def test_headers_are_taken_as_curl_takes_them(text: str, parsed: tuple[str, str]) -> None:
    assert parse_header(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Authorization", "not a header"),
        (": value", "not a header"),
        ("Bad Name: v", "not a header"),
        ("X: a\rInjected: 1", "no HTTP header can carry"),
        ("X: " + "v" * 9000, "no HTTP header can carry"),
    ],
)
def test_malformed_headers_are_refused(text: str, message: str) -> None:
    with pytest.raises(PayError, match=message):
        parse_header(text)


async def test_headers_reach_the_server() -> None:
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/free", endpoint, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport) as client:
        paid = await pay(
            "POST",
            "http://lab.test/free",
            b"{}",
            KEY,
            client=client,
            headers={"Authorization": "k"},
        )
    assert paid.status == 200
    assert seen == ["k"]
