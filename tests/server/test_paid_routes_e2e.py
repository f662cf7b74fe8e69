"""Every paid route over real HTTP: uvicorn + x402gw + anvil, paid by the official x402 SDK client.

DNS is an NSD lab, mailboxes a loopback SMTP server, LinkedIn results the search lab; balances are
read from the chain, so "charged" and "not charged" are on-chain facts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount
from lab.anvil import AnvilChain, dev_account, free_port
from lab.dnslab import DnsLab
from lab.fakesmtp import Behaviour, FakeSmtpServer, fake_smtp
from lab.mailstack import running_dns
from lab.searchlab import SearchLab
from lab.webserver import UvicornThread
from tests_server_helpers import assert_envelope
from x402 import x402Client
from x402.http import x402HTTPClient
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme

from emailintel.dns import DnsResolver
from emailintel.search import Backoff, engine_from_env
from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts
from server.app import create_app
from server.cli import main
from server.payments import gate_factory
from server.settings import Settings, load_settings

PAYER_FUNDS = 50_000_000
MAILBOX = "jane.doe@paid.test"
PRICES = {
    "/email/validate": 3_000,
    "/email/verify": 5_000,
    "/email/find": 10_000,
    "/linkedin/find-url": 8_000,
    "/prospects/search": 12_000,
}
PAID_CALLS = {
    "/email/validate": {"email": MAILBOX},
    "/email/verify": {"email": MAILBOX},
    "/email/find": {"first_name": "Jane", "last_name": "Doe", "domain": "paid.test"},
    "/linkedin/find-url": {"name": "Priya Sharma", "company": "Northwind Traders"},
    "/prospects/search": {"tags": ["ai"]},
}


@dataclass
class PaidStack:
    """The running server and the chain facts tests check."""

    url: str
    chain: AnvilChain
    token: str
    payer: LocalAccount
    merchant: str
    search: SearchLab
    settings: Settings

    def balances(self) -> tuple[int, int]:
        """(payer, merchant) token balances from the node."""
        return (
            self.chain.balance_of(self.token, self.payer.address),
            self.chain.balance_of(self.token, self.merchant),
        )

    def sdk_client(self) -> x402HttpxClient:
        """The official SDK's httpx client, allowed to pay our lab token."""
        client = x402Client()
        client.register("eip155:*", ExactEvmScheme(self.payer))
        client.set_spend_controls(
            {
                "allowed_assets": [
                    {
                        "network": "eip155:31337",
                        "asset": self.token,
                        "max_amount_per_payment": "1000000",
                    }
                ]
            }
        )
        self.sdk = client
        return x402HttpxClient(client, timeout=60)

    sdk: x402Client | None = None


@pytest.fixture(scope="module")
def paid_dns() -> Iterator[DnsLab]:
    """paid.test (MX 127.0.0.1: one mailbox), catchall.test (127.0.0.2: accepts all), slow.test
    (127.0.0.3: RCPT answers too late), deadmx.test (MX on a silent address), broken.test
    answering SERVFAIL."""
    lab = DnsLab(
        {
            "paid.test": [("@", "MX", "10 mx"), ("mx", "A", "127.0.0.1")],
            "deadmx.test": [("@", "MX", "10 mx"), ("mx", "A", "127.0.0.77")],
            "catchall.test": [("@", "MX", "10 mx"), ("mx", "A", "127.0.0.2")],
            "slow.test": [("@", "MX", "10 mx"), ("mx", "A", "127.0.0.3")],
        },
        servfail_zones=["broken.test"],
    )
    with running_dns(lab):
        yield lab


@pytest.fixture(scope="module")
def stack(
    anvil: AnvilChain, paid_dns: DnsLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PaidStack]:
    """Token + funded payer on anvil, fake MX, search lab, and the paid server over uvicorn."""
    token = anvil.deploy_token("USD Coin", "2", "USDC").address
    payer, settler = dev_account(5), dev_account(6)
    merchant = dev_account(7).address
    anvil.mint(token, payer.address, PAYER_FUNDS)
    work = tmp_path_factory.mktemp("paid")
    settings = load_settings(
        env_file=None,
        database_url=f"sqlite+aiosqlite:///{work / 'bavlio.sqlite3'}",
        rpc_url=anvil.url,
        network="eip155:31337",
        asset=token,
        pay_to=merchant,
        settler_key="0x" + bytes(settler.key).hex(),
    )
    with (
        fake_smtp(Behaviour(known_users=frozenset({MAILBOX}))) as mx,
        FakeSmtpServer("127.0.0.2", Behaviour(), port=mx.port),
        FakeSmtpServer("127.0.0.3", Behaviour(rcpt_delay=3.0), port=mx.port),
        SearchLab() as search,
    ):
        prober = Prober(
            helo="probe.verifier-lab.test",
            mail_from="bounce@verifier-lab.test",
            allow_private_mx=True,
            politeness=PolitenessConfig.unlimited(),
            timeouts=Timeouts(connect=1, banner=2, command=1),
            port=mx.port,
        )
        engine = engine_from_env(search.env("duckduckgo"), backoff=Backoff(retries=1, base=0.0))
        app = create_app(
            settings,
            payment_middleware=gate_factory(settings),
            resolver=DnsResolver([paid_dns.nameserver], timeout=1.0),
            prober=prober,
            search=engine,
        )
        with UvicornThread(app) as server:
            yield PaidStack(server.url, anvil, token, payer, merchant, search, settings)


@pytest_asyncio.fixture(loop_scope="function")
async def sdk(stack: PaidStack) -> AsyncIterator[x402HttpxClient]:
    """The SDK client for one test."""
    async with stack.sdk_client() as client:
        yield client


def _url(stack: PaidStack, path: str) -> str:
    return f"{stack.url}/api/x402/v1{path}"


def _settlement(stack: PaidStack, response: httpx.Response) -> dict[str, Any]:
    assert stack.sdk is not None
    settled = x402HTTPClient(stack.sdk).get_payment_settle_response(response.headers.get)
    return dict(settled.model_dump(by_alias=True))


@pytest.mark.parametrize("path", list(PAID_CALLS))
async def test_sdk_client_pays_each_route(
    stack: PaidStack, sdk: x402HttpxClient, path: str
) -> None:
    payer_before, merchant_before = stack.balances()
    response = await sdk.post(_url(stack, path), json=PAID_CALLS[path])
    assert response.status_code == 200, response.text
    settled = _settlement(stack, response)
    assert settled["success"] is True
    assert settled["payer"] == stack.payer.address
    assert settled["network"] == "eip155:31337"
    receipt = stack.chain.rpc("eth_getTransactionReceipt", settled["transaction"])
    assert int(receipt["status"], 16) == 1
    payer_after, merchant_after = stack.balances()
    assert payer_after == payer_before - PRICES[path]
    assert merchant_after == merchant_before + PRICES[path]


async def test_paid_answers_carry_the_results(stack: PaidStack, sdk: x402HttpxClient) -> None:
    verified = (await sdk.post(_url(stack, "/email/verify"), json={"email": MAILBOX})).json()
    assert verified["risk_level"] == "valid"
    assert verified["smtp"]["accepted"] is True
    found = (await sdk.post(_url(stack, "/email/find"), json=PAID_CALLS["/email/find"])).json()
    assert found["found"] is True
    assert found["email"] == MAILBOX
    assert found["attempts"][-1] == {
        "email": MAILBOX,
        "pattern": found["pattern"],
        "status": "accepted",
    }
    assert all(a["status"] == "rejected" for a in found["attempts"][:-1])
    given = await sdk.post(
        _url(stack, "/email/find"),
        json={"candidates": ["nobody@paid.test", "x@@bad", "jane@nowhere.test"]},
    )
    assert given.json()["found"] is False
    statuses = [a["status"] for a in given.json()["attempts"]]
    assert statuses == ["rejected", "invalid", "invalid"]
    linkedin = (
        await sdk.post(_url(stack, "/linkedin/find-url"), json=PAID_CALLS["/linkedin/find-url"])
    ).json()
    assert linkedin["best"]["url"] == "https://www.linkedin.com/in/priya-sharma"
    assert 0 < linkedin["best"]["score"] <= 1
    assert linkedin["best"]["evidence"]["company_match"] > 0


async def test_catch_all_domain_is_answered_not_found(
    stack: PaidStack, sdk: x402HttpxClient
) -> None:
    payer_before, _ = stack.balances()
    response = await sdk.post(
        _url(stack, "/email/find"),
        json={"first_name": "Ann", "last_name": "Lee", "domain": "catchall.test"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["found"] is False
    assert body["catch_all"] is True
    assert body["email"] is None
    assert stack.balances()[0] == payer_before - PRICES["/email/find"]


async def test_invalid_address_is_answered_and_charged(
    stack: PaidStack, sdk: x402HttpxClient
) -> None:
    payer_before, _ = stack.balances()
    response = await sdk.post(_url(stack, "/email/validate"), json={"email": "not-an-address"})
    assert response.status_code == 200
    assert response.json()["risk_level"] == "invalid"
    assert stack.balances()[0] == payer_before - PRICES["/email/validate"]


async def test_a_name_that_names_nobody_is_answered_and_charged(
    stack: PaidStack, sdk: x402HttpxClient
) -> None:
    """Schema-valid input no address or search can be made of gets an empty answer (a 200)."""
    payer_before, _ = stack.balances()
    linkedin = await sdk.post(
        _url(stack, "/linkedin/find-url"), json={"name": "0", "company": "Acme"}
    )
    assert linkedin.status_code == 200, linkedin.text
    assert linkedin.json()["best"] is None
    assert linkedin.json()["queries"] == []
    found = await sdk.post(
        _url(stack, "/email/find"), json={"first_name": "0", "last_name": "1", "domain": "x"}
    )
    assert found.status_code == 200, found.text
    assert found.json()["found"] is False
    assert found.json()["attempts"] == []
    price = PRICES["/linkedin/find-url"] + PRICES["/email/find"]
    assert stack.balances()[0] == payer_before - price


@pytest.mark.parametrize("path", list(PAID_CALLS))
def test_unpaid_call_gets_both_challenges(stack: PaidStack, path: str) -> None:
    response = httpx.post(_url(stack, path), json=PAID_CALLS[path])
    assert response.status_code == 402
    header = json.loads(base64.b64decode(response.headers["payment-required"]))
    assert header["x402Version"] == 2
    [offer] = header["accepts"]
    assert offer["amount"] == str(PRICES[path])
    assert offer["payTo"] == stack.merchant
    assert offer["asset"] == stack.token
    assert offer["network"] == "eip155:31337"
    body = response.json()
    assert body["x402Version"] == 1
    [legacy] = body["accepts"]
    assert legacy["maxAmountRequired"] == str(PRICES[path])
    assert legacy["network"] == "anvil"
    assert legacy["resource"] == _url(stack, path)


BAD_BODIES = [
    ("/email/validate", b"{", "invalid_json"),
    ("/email/validate", b'{"email": 5}', "parameter_invalid"),
    ("/email/verify", b"{}", "parameter_missing"),
    ("/email/find", b'{"first_name": "Jane"}', "parameter_invalid"),
    ("/email/find", b'{"candidates": ["a@b.test"], "domain": "b.test"}', "parameter_invalid"),
    ("/linkedin/find-url", b'{"name": "Jane"}', "parameter_missing"),
    ("/prospects/search", b'{"tags": ["ai"], "extra": 1}', "parameter_unknown"),
    ("/prospects/search", b'{"tags": ["ai"], "limit": ' + b"9" * 5000 + b"}", "invalid_json"),
    ("/email/validate", b"[" * 100_000, "invalid_json"),
    ("/email/find", b'{"candidates": null}', "parameter_invalid"),
    ("/linkedin/find-url", b'{"name": " ", "company": "Acme"}', "parameter_invalid"),
]


@pytest.mark.parametrize(("path", "body", "code"), BAD_BODIES)
async def test_bad_bodies_are_400_and_not_charged(
    stack: PaidStack, sdk: x402HttpxClient, path: str, body: bytes, code: str
) -> None:
    before = stack.balances()
    response = await sdk.post(
        _url(stack, path), content=body, headers={"content-type": "application/json"}
    )
    assert_envelope(response, 400, "invalid_request_error", code)
    assert "payment-response" not in response.headers
    assert stack.balances() == before


async def test_upstream_failures_are_not_charged(stack: PaidStack, sdk: x402HttpxClient) -> None:
    before = stack.balances()
    dns_down = await sdk.post(_url(stack, "/email/validate"), json={"email": "a@broken.test"})
    assert_envelope(dns_down, 503, "api_error", "dns_unavailable")
    smtp_down = await sdk.post(_url(stack, "/email/verify"), json={"email": "a@deadmx.test"})
    assert_envelope(smtp_down, 503, "api_error", "smtp_unavailable")
    smtp_slow = await sdk.post(_url(stack, "/email/verify"), json={"email": "a@slow.test"})
    assert_envelope(smtp_slow, 504, "api_error", "smtp_timeout")
    find_down = await sdk.post(_url(stack, "/email/find"), json={"candidates": ["a@deadmx.test"]})
    assert_envelope(find_down, 503, "api_error", "smtp_unavailable")
    stack.search.fail_next(10, "429")
    try:
        limited = await sdk.post(
            _url(stack, "/linkedin/find-url"), json={"name": "Ann Lee", "company": "Acme"}
        )
    finally:
        stack.search.clear_failures()
    assert_envelope(limited, 503, "api_error", "search_rate_limited")
    stack.search.fail_next(10, "500")
    try:
        broken = await sdk.post(
            _url(stack, "/linkedin/find-url"), json={"name": "Ann Lee", "company": "Acme"}
        )
    finally:
        stack.search.clear_failures()
    assert_envelope(broken, 502, "api_error", "search_unavailable")
    for response in (dns_down, smtp_down, smtp_slow, find_down, limited, broken):
        assert "payment-response" not in response.headers
    assert stack.balances() == before


def test_bavlio_pay_pays_a_call(
    stack: PaidStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAVLIO_PAYER_KEY", "0x" + bytes(stack.payer.key).hex())
    payer_before, merchant_before = stack.balances()
    code = main(["pay", "POST", _url(stack, "/email/validate"), json.dumps({"email": MAILBOX})])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["risk_level"] == "valid"
    receipt = json.loads(err.strip().splitlines()[-1])
    assert receipt["paid"] is True
    assert receipt["payer"] == stack.payer.address
    assert receipt["amount"] == str(PRICES["/email/validate"])
    mined = stack.chain.rpc("eth_getTransactionReceipt", receipt["transaction"])
    assert int(mined["status"], 16) == 1
    assert stack.balances() == (
        payer_before - PRICES["/email/validate"],
        merchant_before + PRICES["/email/validate"],
    )


def test_bavlio_pay_reports_handler_errors_unpaid(
    stack: PaidStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAVLIO_PAYER_KEY", "0x" + bytes(stack.payer.key).hex())
    before = stack.balances()
    assert main(["pay", "POST", _url(stack, "/email/validate"), '{"mail": 1}']) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["code"] == "parameter_missing"
    assert json.loads(err) == {"paid": False, "status": 400}
    assert stack.balances() == before


@pytest.mark.parametrize(
    ("key", "options", "body", "message"),
    [
        (None, [], "{}", "BAVLIO_PAYER_KEY is not set"),
        ("0x1234", [], "{}", "not a 32-byte hex private key"),
        ("payer", ["--max-amount", "100"], "{}", "above the cap 100"),
        ("payer", [], "{not json", "the body is not JSON"),
    ],
)
def test_bavlio_pay_errors_exit_2(
    stack: PaidStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key: str | None,
    options: list[str],
    body: str,
    message: str,
) -> None:
    monkeypatch.delenv("BAVLIO_PAYER_KEY", raising=False)
    if key is not None:
        value = "0x" + bytes(stack.payer.key).hex() if key == "payer" else key
        monkeypatch.setenv("BAVLIO_PAYER_KEY", value)
    before = stack.balances()
    code = main(["pay", *options, "POST", _url(stack, "/email/validate"), body])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("bavlio pay: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert stack.balances() == before


def test_bavlio_pay_unreachable_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAVLIO_PAYER_KEY", "0x" + bytes(dev_account(5).key).hex())
    url = f"http://127.0.0.1:{free_port()}/api/x402/v1/email/validate"
    assert main(["pay", "POST", url, "{}"]) == 2
    assert "request to" in capsys.readouterr().err
    assert main(["pay", "GET", "ftp://example.test/x"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err


def test_bavlio_pay_unfunded_payer_is_refused(
    stack: PaidStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAVLIO_PAYER_KEY", "0x" + "5a" * 32)  # holds no tokens
    before = stack.balances()
    assert main(["pay", "POST", _url(stack, "/prospects/search"), '{"tags": ["ai"]}']) == 2
    err = capsys.readouterr().err
    assert err.startswith("bavlio pay: payment refused: ")
    assert "insufficient" in err
    assert stack.balances() == before
