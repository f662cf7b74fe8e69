"""Provider keys in RPC and facilitator URLs never reach an error message, an HTTP body or a log.

Each URL carries a planted secret in its path and its query; the upstream is down, answers HTTP
500, garbage, or a JSON-RPC error, each echoing the request URL as proxies and providers do.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from paylab import free_port
from rpclab import RpcRelay

from x402gw.chain import ChainClient
from x402gw.errors import X402Error
from x402gw.facilitator import HttpFacilitator, LocalFacilitator
from x402gw.facilitator_app import FacilitatorApp
from x402gw.wire import FacilitatorRequest

if TYPE_CHECKING:
    from conftest import EvmLab, OfferFactory, PayFunction


PATH_SECRET = "pathSECRET0a1b2c3d4e"
QUERY_SECRET = "querySECRET9f8e7d6c5b"
SECRETS = (PATH_SECRET, QUERY_SECRET)
SECRET_PATH = f"/v3/{PATH_SECRET}?apikey={QUERY_SECRET}"


def assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text


def assert_exception_clean(exc: BaseException) -> None:
    """The message and the whole printed traceback, chained causes included."""
    assert_clean(str(exc), "".join(traceback.format_exception(exc)))


# httpx logs every request URL at INFO by design (see the notes), and aiohttp.access is the
# test relay's own server log: neither is x402gw's to redact.
FOREIGN_LOGGERS = ("httpx", "httpcore", "aiohttp.access")


def assert_logs_clean(caplog: pytest.LogCaptureFixture, *, logged: bool = True) -> None:
    records = [r for r in caplog.records if not r.name.startswith(FOREIGN_LOGGERS)]
    if logged:  # the details went somewhere
        assert any(r.name.startswith("x402gw") for r in records)
    for record in records:
        assert_clean(record.getMessage())
        if record.exc_info:
            assert_clean("".join(traceback.format_exception(*record.exc_info)))


def echo_url(status: int, shape: str) -> Callable[[Any], tuple[int, bytes]]:
    """An upstream failing in ``shape`` (garbage, rpc_error, one_for_batch), echoing the URL."""

    def answer(parsed: Any) -> tuple[int, bytes]:
        where = f"http://127.0.0.1{SECRET_PATH}"
        if shape == "garbage":
            return status, f"<html>502 bad gateway for {where}</html>".encode()
        error = {"code": -32000, "message": f"key rejected for {where}"}
        if shape == "one_for_batch" or not isinstance(parsed, list):
            return status, json.dumps({"jsonrpc": "2.0", "id": 1, "error": error}).encode()
        replies = [{"jsonrpc": "2.0", "id": call["id"], "error": error} for call in parsed]
        return status, json.dumps(replies).encode()

    return answer


UPSTREAMS = {
    "http_500": echo_url(500, "garbage"),
    "garbage": echo_url(200, "garbage"),
    "rpc_error": echo_url(200, "rpc_error"),
    "one_reply_for_a_batch": echo_url(200, "one_for_batch"),
}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def _request_body(pay: PayFunction, evm: EvmLab, offer: OfferFactory) -> dict[str, Any]:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    return FacilitatorRequest(
        x402_version=2, payment_payload=payload, payment_requirements=requirements
    ).to_json_dict()


TOKEN = "secrets-test-token-0123456789"


async def _through_app(facilitator: Any, body: dict[str, Any]) -> list[httpx.Response]:
    app = FacilitatorApp(facilitator, tokens=[TOKEN])
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://fac", headers=headers
    ) as http:
        return [
            await http.post("/verify", json=body),
            await http.post("/settle", json=body),
            await http.get("/supported"),
        ]


def _facilitator(url: str, evm: EvmLab) -> LocalFacilitator:
    return LocalFacilitator.from_rpc(
        url, evm.operator, evm.network, allowed_payments=[(evm.token, evm.merchant)]
    )


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_rpc_url_secrets_stay_out_of_errors_bodies_and_logs(
    evm: EvmLab,
    offer: OfferFactory,
    pay: PayFunction,
    logs: pytest.LogCaptureFixture,
    upstream: str,
) -> None:
    body = await _request_body(pay, evm, offer)
    async with RpcRelay(evm.anvil.url, UPSTREAMS[upstream]) as relay:
        url = relay.url(SECRET_PATH)
        client = ChainClient(url, retries=0)
        try:
            calls: list[Callable[[], Awaitable[Any]]] = [
                client.chain_id,
                lambda: client.get_code(evm.payer.address),
                lambda: client.eth_balance(evm.payer.address),
                lambda: client.request_batch([("eth_chainId", []), ("eth_blockNumber", [])]),
            ]
            for call in calls:
                try:
                    await call()  # a batch returns the replies, error objects included
                except X402Error as exc:
                    assert_exception_clean(exc)
        finally:
            await client.aclose()
        facilitator = _facilitator(url, evm)
        try:
            for response in await _through_app(facilitator, body):
                assert_clean(response.text)
        finally:
            await facilitator.aclose()
    assert relay.requests > 0
    assert_logs_clean(logs)


async def test_rpc_down_names_only_host_and_port(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction, logs: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"http://user:{PATH_SECRET}@127.0.0.1:{port}{SECRET_PATH}"
    client = ChainClient(url, retries=0)
    try:
        with pytest.raises(X402Error) as caught:
            await client.chain_id()
    finally:
        await client.aclose()
    assert_exception_clean(caught.value)
    assert f"http://127.0.0.1:{port}" in str(caught.value)
    facilitator = _facilitator(url, evm)
    try:
        responses = await _through_app(facilitator, await _request_body(pay, evm, offer))
    finally:
        await facilitator.aclose()
    assert [r.status_code for r in responses[:2]] == [503, 503]
    assert responses[0].json() == {
        "error": "chain_unavailable",
        "message": "the chain cannot be reached; try again later",
    }
    for response in responses:
        assert_clean(response.text)
    assert_logs_clean(logs)


async def test_a_node_error_in_the_simulation_is_redacted_in_the_verdict(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction, logs: pytest.LogCaptureFixture
) -> None:
    """The node answers everything but the simulation: the verdict's message is the node's error,
    with the URL's secrets removed."""
    error = {"code": -32000, "message": f"key rejected for http://127.0.0.1{SECRET_PATH}"}

    def failing_simulation(parsed: Any) -> tuple[int, bytes] | None:
        calls = parsed if isinstance(parsed, list) else [parsed]
        if all(call["method"] != "eth_call" for call in calls):
            return None
        others = [call for call in calls if call["method"] != "eth_call"]
        real = httpx.post(evm.anvil.url, json=others).json() if others else []
        by_id = {reply["id"]: reply for reply in real}
        out = [
            by_id.get(c["id"]) or {"jsonrpc": "2.0", "id": c["id"], "error": error} for c in calls
        ]
        return 200, json.dumps(out if isinstance(parsed, list) else out[0]).encode()

    body = await _request_body(pay, evm, offer)
    async with RpcRelay(evm.anvil.url, failing_simulation) as relay:
        facilitator = _facilitator(relay.url(SECRET_PATH), evm)
        try:
            verify, _settle, _supported = await _through_app(facilitator, body)
        finally:
            await facilitator.aclose()
    assert verify.status_code == 200
    assert verify.json()["isValid"] is False
    assert "key rejected for http://127.0.0.1***" in verify.json()["invalidMessage"]
    assert_clean(verify.text)
    assert_logs_clean(logs, logged=False)


@pytest.mark.parametrize("upstream", ["http_500", "garbage"])
async def test_facilitator_url_secrets_and_bodies_stay_out_of_errors(
    evm: EvmLab,
    offer: OfferFactory,
    pay: PayFunction,
    logs: pytest.LogCaptureFixture,
    upstream: str,
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    async with RpcRelay(evm.anvil.url, UPSTREAMS[upstream]) as relay:
        remote = HttpFacilitator(relay.url(SECRET_PATH.replace("?", "/x?")))
        try:
            with pytest.raises(X402Error) as caught:
                await remote.verify(payload, requirements)
            assert_exception_clean(caught.value)
            assert "502 bad gateway" not in str(caught.value)  # no upstream body either
            responses = await _through_app(remote, await _request_body(pay, evm, offer))
        finally:
            await remote.aclose()
    assert [r.status_code for r in responses] == [503, 503, 503]
    assert responses[0].json()["error"] == "upstream_unavailable"
    for response in responses:
        assert_clean(response.text)
        assert "bad gateway" not in response.text
    assert_logs_clean(logs)


async def test_unreachable_facilitator_names_only_host_and_port(
    evm: EvmLab, offer: OfferFactory, pay: PayFunction, logs: pytest.LogCaptureFixture
) -> None:
    requirements = offer()
    payload = await pay(evm.payer, requirements)
    remote = HttpFacilitator(f"http://127.0.0.1:{free_port()}{SECRET_PATH}", timeout=2)
    try:
        with pytest.raises(X402Error) as caught:
            await remote.settle(payload, requirements)
    finally:
        await remote.aclose()
    assert_exception_clean(caught.value)
    assert_logs_clean(logs)
