"""The paid mount behind the real server: never free under a root path or a mount, one error
envelope for the gate's refusals, and rate limits per client address and per payer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from lab.anvil import AnvilChain, dev_account, free_port
from lab.dnslab import DnsLab
from lab.webserver import UvicornThread
from starlette.applications import Starlette
from starlette.routing import Mount
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme

from emailintel.dns import DnsResolver
from server.app import create_app
from server.payments import gate_factory
from server.settings import load_settings

REDIS_URL = os.environ.get("X402GW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SEARCH = "/api/x402/v1/prospects/search"


@pytest.fixture(scope="module")
def token(anvil: AnvilChain) -> str:
    return anvil.deploy_token("USD Coin", "2", "USDC").address


def _app(anvil: AnvilChain, token: str, tmp_path: Path, dns_lab: DnsLab, **changes: Any) -> Any:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'bavlio.sqlite3'}",
        "network": "eip155:31337",
        "asset": token,
        "pay_to": "0x" + os.urandom(20).hex(),
        "settler_key": "0x" + bytes(dev_account(9).key).hex().removeprefix("0x"),
        "rpc_url": anvil.url,
        **changes,
    }
    settings = load_settings(env_file=None, **values)
    return create_app(
        settings,
        payment_middleware=gate_factory(settings),
        resolver=DnsResolver([dns_lab.nameserver]),
    )


@pytest_asyncio.fixture(loop_scope="function")
async def fresh_payer(anvil: AnvilChain, token: str) -> AsyncIterator[x402HttpxClient]:
    """The SDK client paying from a new funded account (rate-limit windows start empty)."""
    account = Account.create()
    anvil.mint(token, account.address, 1_000_000)
    client = x402Client()
    client.register("eip155:*", ExactEvmScheme(account))
    client.set_spend_controls(False)
    async with x402HttpxClient(client, timeout=60) as http:
        yield http


@pytest.fixture
def served(anvil: AnvilChain, token: str, tmp_path: Path, dns_lab: DnsLab) -> Iterator[str]:
    with UvicornThread(_app(anvil, token, tmp_path, dns_lab)) as server:
        yield server.url


async def test_root_path_does_not_make_paid_routes_free(
    anvil: AnvilChain, token: str, tmp_path: Path, dns_lab: DnsLab
) -> None:
    app = _app(anvil, token, tmp_path, dns_lab)
    with UvicornThread(app, root_path="/svc") as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post(SEARCH, json={"tags": ["ai"]})
    assert response.status_code == 402, response.text


async def test_a_mounted_server_does_not_make_paid_routes_free(
    anvil: AnvilChain, token: str, tmp_path: Path, dns_lab: DnsLab
) -> None:
    outer = Starlette(routes=[Mount("/svc", app=_app(anvil, token, tmp_path, dns_lab))])
    with UvicornThread(outer) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post("/svc" + SEARCH, json={"tags": ["ai"]})
    assert response.status_code == 402, response.text


async def test_gate_refusals_use_the_envelope(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as http:
        challenge = await http.post(SEARCH, json={"tags": ["ai"]}, headers={"x-request-id": "r-1"})
        unknown = await http.post("/api/x402/v1/nope", json={})
        wrong_method = await http.get(SEARCH)
    body = challenge.json()
    assert challenge.status_code == 402
    assert body["x402Version"] == 1
    assert body["accepts"]
    assert body["error"] == "Payment required"  # the v1 field, a string for v1 clients
    assert body["type"] == "payment_required"
    assert body["code"] == "payment_required"
    assert body["request_id"] == challenge.headers["x-request-id"] == "r-1"
    assert challenge.headers["payment-required"]
    for response, status, code in (
        (unknown, 404, "route_not_found"),
        (wrong_method, 405, "method_not_allowed"),
    ):
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == code
        assert error["request_id"] == response.headers["x-request-id"]


async def test_rate_limit_per_client_address(
    anvil: AnvilChain, token: str, tmp_path: Path, dns_lab: DnsLab
) -> None:
    app = _app(anvil, token, tmp_path, dns_lab, rate_limit_ip="2/minute")
    with UvicornThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            answers = [await http.post(SEARCH, json={"tags": ["ai"]}) for _ in range(3)]
            health = await http.get("/health")
    assert [a.status_code for a in answers] == [402, 402, 429]
    limited = answers[2]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.json()["error"]["code"] == "rate_limited"
    assert health.status_code == 200  # only the paid routes are limited here


async def test_rate_limit_per_payer_in_redis(
    anvil: AnvilChain,
    token: str,
    tmp_path: Path,
    dns_lab: DnsLab,
    fresh_payer: x402HttpxClient,
) -> None:
    app = _app(anvil, token, tmp_path, dns_lab, rate_limit_payer="1/minute", redis_url=REDIS_URL)
    with UvicornThread(app) as server:
        first = await fresh_payer.post(server.url + SEARCH, json={"tags": ["ai"]})
        second = await fresh_payer.post(server.url + SEARCH, json={"tags": ["ai"]})
    assert first.status_code == 200, first.text
    assert second.status_code == 429
    assert second.headers["retry-after"]


async def test_rate_limit_store_down_fails_open(
    anvil: AnvilChain, token: str, tmp_path: Path, dns_lab: DnsLab
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = _app(anvil, token, tmp_path, dns_lab, rate_limit_ip="1/minute", redis_url=dead)
    with UvicornThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            answers = [await http.post(SEARCH, json={"tags": ["ai"]}) for _ in range(3)]
    assert [a.status_code for a in answers] == [402, 402, 402]
