"""server.payments: the gate built from settings. Bad payment settings, a remote facilitator (x402gw's
facilitator app on anvil) with the ledger on PostgreSQL and Redis locks, and Redis down."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from lab.anvil import AnvilChain, dev_account, free_port
from lab.dnslab import DnsLab
from lab.webserver import UvicornThread
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme

from emailintel.dns import DnsResolver
from server.app import create_app
from server.cli import main
from server.openapi import paid_routes
from server.payments import PaymentGate, gate_factory, network_registry, payments_enabled
from server.routes import operations
from server.settings import Settings, SettingsError, load_settings
from x402gw.facilitator import HttpFacilitator, LocalFacilitator
from x402gw.facilitator_app import FacilitatorApp
from x402gw.locks import RedisLocks

REDIS_URL = os.environ.get("X402GW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PRICE = 12_000  # prospects/search
ADDRESS = "0x" + "22" * 20
KEY = "0x" + "33" * 32
FACILITATOR_TOKEN = "facilitator-token-0123456789abcdef"


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")


def _gate(settings: Settings) -> PaymentGate:
    return PaymentGate(_noop, paid_routes(settings, operations()), settings)


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'bavlio.sqlite3'}",
        "network": "eip155:31337",
        "asset": ADDRESS,
        "pay_to": ADDRESS,
        "settler_key": KEY,
        "rpc_url": "http://127.0.0.1:9",
    }
    base.update(changes)
    return load_settings(env_file=None, **{k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"pay_to": None}, "BAVLIO_PAY_TO"),
        ({"rpc_url": None}, "BAVLIO_RPC_URL"),
        ({"network": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"}, "BAVLIO_NETWORK"),
    ],
)
def test_bad_payment_settings_name_the_variable(
    tmp_path: Path, changes: dict[str, Any], variable: str
) -> None:
    settings = _settings(tmp_path, **changes)
    with pytest.raises(SettingsError) as caught:
        create_app(settings, payment_middleware=gate_factory(settings))
    assert caught.value.variable == variable


def test_serve_with_incomplete_payment_settings_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("BAVLIO_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BAVLIO_SETTLER_KEY", KEY)
    monkeypatch.setenv("BAVLIO_RPC_URL", "http://127.0.0.1:9")
    assert main(["serve", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "bavlio: invalid setting BAVLIO_PAY_TO: payments need the address that receives them\n"
    )


async def test_modes_and_networks(tmp_path: Path) -> None:
    assert not payments_enabled(_settings(tmp_path, settler_key=None))
    local = _gate(_settings(tmp_path))
    assert isinstance(local.facilitator, LocalFacilitator)
    assert local.locks is None
    remote = _gate(
        _settings(
            tmp_path, settler_key=None, facilitator_url="http://127.0.0.1:9", redis_url=REDIS_URL
        ),
    )
    assert isinstance(remote.facilitator, HttpFacilitator)
    assert isinstance(remote.locks, RedisLocks)
    # A remote facilitator with an RPC URL: the gate reads the chain itself to reconcile.
    assert remote.chain is not None
    assert remote.config.reconcile_client is remote.chain
    assert local.chain is None
    with pytest.raises(SettingsError) as blind:  # it could never reconcile a pending payment
        _gate(_settings(tmp_path, settler_key=None, rpc_url=None, facilitator_url="http://x:9"))
    assert blind.value.variable == "BAVLIO_RPC_URL"
    for gate in (local, remote):
        await gate.aclose()
    assert network_registry(_settings(tmp_path)).to_v1("eip155:31337") == "anvil"
    base = network_registry(_settings(tmp_path, network="eip155:8453"))
    assert base.to_v1("eip155:8453") == "base"
    assert base.default_asset("eip155:8453").address == ADDRESS  # the configured asset wins


# ---- remote facilitator, PostgreSQL ledger, Redis locks --------------------------------------


@pytest.fixture(scope="module")
def chain_token(anvil: AnvilChain) -> tuple[AnvilChain, str]:
    """A token on the session chain with a funded payer (dev account 8)."""
    token = anvil.deploy_token("USD Coin", "2", "USDC").address
    anvil.mint(token, dev_account(8).address, 1_000_000)
    return anvil, token


@pytest.fixture
def merchant() -> str:
    """A fresh payTo address per test."""
    return "0x" + os.urandom(20).hex()


@pytest.fixture
def facilitator_url(chain_token: tuple[AnvilChain, str], merchant: str) -> Iterator[str]:
    """x402gw's facilitator app (settling on anvil with dev account 9, for the test's merchant
    only) over uvicorn on loopback, requiring :data:`FACILITATOR_TOKEN`."""
    chain, token = chain_token
    facilitator = LocalFacilitator.from_rpc(
        chain.url, dev_account(9), "eip155:31337", allowed_payments=[(token, merchant)]
    )
    app = FacilitatorApp(facilitator, tokens=[FACILITATOR_TOKEN])

    async def closing(scope: Any, receive: Any, send: Any) -> None:
        async def shutdown_aware() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":  # close RPC sessions on their own loop
                await facilitator.aclose()
            return message

        await app(scope, shutdown_aware if scope["type"] == "lifespan" else receive, send)

    with UvicornThread(closing) as server:
        yield server.url


def _remote_app(
    chain_token: tuple[AnvilChain, str],
    pg_schema: tuple[str, str],
    facilitator: str,
    redis_url: str,
    dns_lab: DnsLab,
    merchant: str,
    facilitator_token: str | None = FACILITATOR_TOKEN,
) -> tuple[Any, str]:
    _, token = chain_token
    url, schema = pg_schema
    settings = load_settings(
        env_file=None,
        database_url=url,
        database_schema=schema,
        redis_url=redis_url,
        facilitator_url=facilitator,
        facilitator_token=facilitator_token,
        rpc_url=chain_token[0].url,
        network="eip155:31337",
        asset=token,
        pay_to=merchant,
    )
    app = create_app(
        settings,
        payment_middleware=gate_factory(settings),
        resolver=DnsResolver([dns_lab.nameserver]),
    )
    return app, merchant


@pytest_asyncio.fixture(loop_scope="function")
async def payer(chain_token: tuple[AnvilChain, str]) -> AsyncIterator[x402HttpxClient]:
    """The SDK client paying from dev account 8."""
    _, token = chain_token
    client = x402Client()
    client.register("eip155:*", ExactEvmScheme(dev_account(8)))
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": "eip155:31337", "asset": token, "max_amount_per_payment": "100000"}
            ]
        }
    )
    async with x402HttpxClient(client, timeout=60) as http:
        yield http


async def test_remote_facilitator_postgres_and_redis(
    chain_token: tuple[AnvilChain, str],
    pg_schema: tuple[str, str],
    facilitator_url: str,
    dns_lab: DnsLab,
    payer: x402HttpxClient,
    merchant: str,
) -> None:
    chain, token = chain_token
    app, _ = _remote_app(chain_token, pg_schema, facilitator_url, REDIS_URL, dns_lab, merchant)
    before = chain.balance_of(token, dev_account(8).address)
    with UvicornThread(app) as server:
        response = await payer.post(
            server.url + "/api/x402/v1/prospects/search", json={"tags": ["ai"]}
        )
        assert response.status_code == 200, response.text
        assert "payment-response" in response.headers
    assert chain.balance_of(token, dev_account(8).address) == before - PRICE
    assert chain.balance_of(token, merchant) == PRICE
    url, schema = pg_schema
    sync_url = url.replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(sync_url) as conn:  # the ledger shares the server's database and schema
        rows = conn.execute(f"SELECT state, amount FROM {schema}.x402gw_payments").fetchall()
    assert [(state, int(amount)) for state, amount in rows] == [("settled", PRICE)]


async def test_redis_down_is_503_and_not_charged(
    chain_token: tuple[AnvilChain, str],
    pg_schema: tuple[str, str],
    facilitator_url: str,
    dns_lab: DnsLab,
    payer: x402HttpxClient,
    merchant: str,
) -> None:
    chain, token = chain_token
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app, _ = _remote_app(chain_token, pg_schema, facilitator_url, dead, dns_lab, merchant)
    before = chain.balance_of(token, dev_account(8).address)
    with UvicornThread(app) as server:
        response = await payer.post(
            server.url + "/api/x402/v1/prospects/search", json={"tags": ["ai"]}
        )
        async with httpx.AsyncClient() as plain:
            free = await plain.get(server.url + "/health")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payment_backend_unavailable"
    assert free.status_code == 200
    assert chain.balance_of(token, dev_account(8).address) == before
    assert chain.balance_of(token, merchant) == 0


async def test_remote_facilitator_without_its_token_is_refused_and_not_charged(
    chain_token: tuple[AnvilChain, str],
    pg_schema: tuple[str, str],
    facilitator_url: str,
    dns_lab: DnsLab,
    payer: x402HttpxClient,
    merchant: str,
) -> None:
    chain, token = chain_token
    app, _ = _remote_app(
        chain_token, pg_schema, facilitator_url, REDIS_URL, dns_lab, merchant, None
    )
    before = chain.balance_of(token, dev_account(8).address)
    with UvicornThread(app) as server:
        response = await payer.post(
            server.url + "/api/x402/v1/prospects/search", json={"tags": ["ai"]}
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "facilitator_error"
    assert FACILITATOR_TOKEN not in response.text
    assert chain.balance_of(token, dev_account(8).address) == before
