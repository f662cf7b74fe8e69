"""Every emailintel error on every paid route is an envelope (400 for the request's content, 5xx
for an upstream), never a 500, over real HTTP: lab DNS, a fake MX, a SOCKS5 proxy.

Library errors that real components raise are triggered for real ("a>b" in an SMTP command, a
proxy that cannot reach the MX); the whole error tree is walked with components handed in through
create_app's hooks that raise each class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from lab.anvil import free_port
from lab.dnslab import DnsLab
from lab.fakesmtp import Behaviour, FakeSmtpServer
from lab.probers import lab_prober
from lab.sockslab import Socks5Server
from lab.webserver import UvicornThread
from tests_server_helpers import assert_envelope

from emailintel.dns import DnsResolver
from emailintel.errors import (
    AddressError,
    ConfigError,
    DnsError,
    EmailIntelError,
    InjectionError,
    PersonNameError,
    ProfileUrlError,
    SearchQueryError,
    SearchRateLimited,
    SearchUnavailable,
)
from emailintel.models import DnsFacts, RiskResult, SmtpFacts
from emailintel.search.models import SearchHit
from emailintel.smtp.prober import Prober
from emailintel.smtp.proxies import ProxyConfig, SmtpProxyError
from emailintel.smtp.session import SmtpConnectError, SmtpTimeoutError
from server.app import create_app
from server.settings import load_settings

PAID = "/api/x402/v1"
QUOTED = '"a>b"@acme.test'  # a valid address whose local part cannot go into RCPT TO:<...>


@pytest.fixture(scope="module")
def acme_mx() -> Iterator[FakeSmtpServer]:
    """An accepting fake MX on acme.test's MX address (127.0.0.2) in the standard DNS lab."""
    with FakeSmtpServer("127.0.0.2", Behaviour()) as mx:
        yield mx


def _settings(tmp_path: Path) -> Any:
    return load_settings(env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")


@pytest.fixture
def lab_server(tmp_path: Path, dns_lab: DnsLab, acme_mx: FakeSmtpServer) -> Iterator[str]:
    """The app with a real prober talking to the fake MX."""
    app = create_app(
        _settings(tmp_path),
        resolver=DnsResolver([dns_lab.nameserver], timeout=2.0),
        prober=lab_prober(port=acme_mx.port),
    )
    with UvicornThread(app) as server:
        yield server.url


def test_an_address_unfit_for_smtp_is_answered_invalid(lab_server: str) -> None:
    """emailintel refuses it as an address (angle brackets): that was a 500, now an answer
    like validate's, without an SMTP session."""
    verify = httpx.post(lab_server + PAID + "/email/verify", json={"email": QUOTED}, timeout=30)
    find = httpx.post(lab_server + PAID + "/email/find", json={"candidates": [QUOTED]}, timeout=30)
    assert verify.status_code == 200, verify.text
    assert verify.json()["risk_level"] == "invalid"
    assert "syntax_invalid" in verify.json()["reasons"]
    assert verify.json()["smtp"] is None
    assert find.status_code == 200, find.text
    assert find.json()["found"] is False
    assert [a["status"] for a in find.json()["attempts"]] == ["invalid"]


def test_the_same_address_is_answered_by_validate(lab_server: str) -> None:
    response = httpx.post(lab_server + PAID + "/email/validate", json={"email": QUOTED})
    assert response.status_code == 200, response.text


# --- a probe failing at the SOCKS proxy -------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="function")
async def socks_proxy() -> AsyncIterator[Socks5Server]:
    async with Socks5Server() as proxy:
        yield proxy


@pytest.mark.parametrize("path", ["/email/verify", "/email/find"])
async def test_a_proxy_that_cannot_reach_the_mx_is_a_503(
    tmp_path: Path, dns_lab: DnsLab, socks_proxy: Socks5Server, path: str
) -> None:
    """The proxy answers, but its CONNECT to the MX is refused (nothing listens on that port)."""
    prober = lab_prober(port=free_port(), proxies=ProxyConfig(default=socks_proxy.url))
    app = create_app(
        _settings(tmp_path), resolver=DnsResolver([dns_lab.nameserver], timeout=2.0), prober=prober
    )
    body = (
        {"email": "ann@acme.test"} if path == "/email/verify" else {"candidates": ["a@acme.test"]}
    )
    with UvicornThread(app) as server:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(server.url + PAID + path, json=body)
    assert_envelope(response, 503, "api_error", "smtp_unavailable")
    assert socks_proxy.connects  # the probe did go through the proxy


@pytest.mark.parametrize("path", ["/email/verify", "/email/find"])
def test_a_proxy_that_is_down_is_a_503(
    tmp_path: Path, dns_lab: DnsLab, acme_mx: FakeSmtpServer, path: str
) -> None:
    dead = f"socks5://127.0.0.1:{free_port()}"
    prober = lab_prober(port=acme_mx.port, proxies=ProxyConfig(default=dead))
    app = create_app(
        _settings(tmp_path), resolver=DnsResolver([dns_lab.nameserver], timeout=2.0), prober=prober
    )
    body = (
        {"email": "ann@acme.test"} if path == "/email/verify" else {"candidates": ["a@acme.test"]}
    )
    with UvicornThread(app) as server:
        response = httpx.post(server.url + PAID + path, json=body, timeout=30)
    assert_envelope(response, 503, "api_error", "smtp_unavailable")


# --- the whole error tree, raised by components handed to create_app --------------------------


@dataclass
class Trap:
    """The exception the raising components throw next (None: behave)."""

    error: Exception | None = None

    def spring(self) -> None:
        if self.error is not None:
            raise self.error


class RaisingValidator:
    """The validate route's validator, raising the trap's error."""

    def __init__(self, trap: Trap) -> None:
        self.trap = trap

    async def validate(self, address: str) -> RiskResult:
        self.trap.spring()
        raise AssertionError("only used to raise")


class RaisingProber(Prober):
    """A real Prober whose probe raises the trap's error."""

    def __init__(self, trap: Trap) -> None:
        super().__init__(helo="probe.verifier-lab.test", mail_from="bounce@verifier-lab.test")
        self.trap = trap

    async def probe(
        self, domain: str, addresses: Any, dns: DnsFacts, *, stop_on_accept: bool = False
    ) -> dict[str, SmtpFacts]:
        self.trap.spring()
        raise AssertionError("only used to raise")


class RaisingSearch:
    """A search backend raising the trap's error."""

    name = "trap"

    def __init__(self, trap: Trap) -> None:
        self.trap = trap

    async def search(self, query: str) -> list[SearchHit]:
        self.trap.spring()
        return []


@dataclass(frozen=True)
class Trapped:
    url: str
    trap: Trap


@pytest.fixture(scope="module")
def trapped(tmp_path_factory: pytest.TempPathFactory, dns_lab: DnsLab) -> Iterator[Trapped]:
    trap = Trap()
    app = create_app(
        _settings(tmp_path_factory.mktemp("trapped")),
        resolver=DnsResolver([dns_lab.nameserver], timeout=2.0),
        validator=RaisingValidator(trap),
        prober=RaisingProber(trap),
        search=RaisingSearch(trap),
    )
    with UvicornThread(app) as server:
        yield Trapped(server.url, trap)


ERRORS: dict[str, tuple[Exception, int, str]] = {
    "AddressError": (AddressError("no @"), 400, "parameter_invalid"),
    "InjectionError": (InjectionError("CR in address"), 400, "parameter_invalid"),
    "PersonNameError": (PersonNameError("no usable name"), 400, "parameter_invalid"),
    "SearchQueryError": (SearchQueryError("query too long"), 400, "parameter_invalid"),
    "ProfileUrlError": (ProfileUrlError("not a profile"), 400, "parameter_invalid"),
    "ConfigError": (ConfigError("no HELO name"), 503, "not_configured"),
    "DnsError": (DnsError("SERVFAIL"), 503, "dns_unavailable"),
    "SearchUnavailable": (SearchUnavailable("HTTP 500"), 502, "search_unavailable"),
    "SearchRateLimited": (SearchRateLimited("HTTP 429"), 503, "search_rate_limited"),
    "SmtpTimeoutError": (SmtpTimeoutError("banner", "no greeting"), 504, "smtp_timeout"),
    "SmtpConnectError": (SmtpConnectError("connect", "refused"), 503, "smtp_unavailable"),
    "SmtpProxyError": (SmtpProxyError("connect", "proxy failed"), 503, "smtp_unavailable"),
    "EmailIntelError": (EmailIntelError("something else"), 503, "upstream_unavailable"),
}
ROUTES = {
    "/email/validate": {"email": "ann@acme.test"},
    "/email/verify": {"email": "ann@acme.test"},
    "/email/find": {"candidates": ["ann@acme.test"]},
    "/linkedin/find-url": {"name": "Ann Lee", "company": "Acme"},
}


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize("name", list(ERRORS))
def test_every_library_error_is_an_envelope(trapped: Trapped, path: str, name: str) -> None:
    error, status, code = ERRORS[name]
    trapped.trap.error = error
    try:
        response = httpx.post(trapped.url + PAID + path, json=ROUTES[path], timeout=30)
    finally:
        trapped.trap.error = None
    assert_envelope(
        response, status, "invalid_request_error" if status < 500 else "api_error", code
    )
    if status >= 500:  # what the library said stays in the log
        assert str(error).split(": ")[-1] not in response.json()["error"]["message"]


def test_the_trapped_routes_answer_when_nothing_is_raised(trapped: Trapped) -> None:
    """The raising components are the only cause of the errors above."""
    response = httpx.post(
        trapped.url + PAID + "/linkedin/find-url", json=ROUTES["/linkedin/find-url"]
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "good"),
    [
        ("/email/verify", {"email": "ann@acme.test"}),
        ("/email/find", {"candidates": ["a@acme.test"]}),
    ],
)
def test_without_an_smtp_identity_bodies_are_checked_first(
    tmp_path: Path, dns_lab: DnsLab, monkeypatch: pytest.MonkeyPatch, path: str, good: Any
) -> None:
    """create_app keeps the SMTP routes by default; unconfigured, they still check bodies first."""
    for name in ("EMAILINTEL_HELO", "EMAILINTEL_MAIL_FROM"):
        monkeypatch.delenv(name, raising=False)
    app = create_app(_settings(tmp_path), resolver=DnsResolver([dns_lab.nameserver], timeout=2.0))
    with UvicornThread(app) as server:
        bad = httpx.post(server.url + PAID + path, json={**good, "extra": 1}, timeout=30)
        unconfigured = httpx.post(server.url + PAID + path, json=good, timeout=30)
    assert_envelope(bad, 400, "invalid_request_error", "parameter_unknown")
    error = assert_envelope(unconfigured, 503, "api_error", "not_configured")
    assert "HELO" not in error["message"]  # the library's words stay in the log
