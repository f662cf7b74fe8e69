"""The port-25 pre-flight against live, dead and garbage-speaking loopback servers."""

from __future__ import annotations

import pytest
from lab.dnslab import DnsLab, free_port
from lab.fakesmtp import Behaviour, fake_smtp
from lab.sockslab import Socks5Server

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError
from emailintel.smtp.preflight import blocked_facts, check_port25
from emailintel.smtp.prober import Prober
from emailintel.smtp.proxies import ProxyConfig


async def test_live_server_passes() -> None:
    with fake_smtp(Behaviour()) as fake:
        result = await check_port25("127.0.0.1", fake.port, wait=2)
    assert result.ok
    assert result.detail.startswith("220")


async def test_dead_port_fails_with_facts_for_every_result() -> None:
    port = free_port("127.0.0.1")
    result = await check_port25("127.0.0.1", port, wait=2)
    assert not result.ok
    assert f"127.0.0.1:{port}" in result.detail
    facts = blocked_facts(result)
    assert facts.port25_blocked is True
    assert facts.checked is False


async def test_silent_server_times_out() -> None:
    with fake_smtp(Behaviour(banner_delay=2)) as fake:
        result = await check_port25("127.0.0.1", fake.port, wait=0.3)
    assert not result.ok
    assert "no greeting" in result.detail


async def test_non_smtp_greeting_fails() -> None:
    with fake_smtp(Behaviour(banner="SSH-2.0-OpenSSH")) as fake:
        result = await check_port25("127.0.0.1", fake.port, wait=2)
    assert not result.ok
    assert "unexpected greeting" in result.detail


async def test_host_name_target_resolved_through_the_lab(mail_dns: DnsLab) -> None:
    resolver = DnsResolver([mail_dns.nameserver])
    with fake_smtp(Behaviour()) as fake:
        ok = await check_port25("mx.fake.test", fake.port, wait=2, resolver=resolver)
    missing = await check_port25("nothing.nowhere.test", 25, wait=2, resolver=resolver)
    assert ok.ok
    assert not missing.ok


async def test_through_a_socks5_proxy() -> None:
    with fake_smtp(Behaviour()) as fake:
        async with Socks5Server() as proxy:
            result = await check_port25("127.0.0.1", fake.port, wait=2, proxy=proxy.url)
    assert result.ok
    assert proxy.connects == [("127.0.0.1", fake.port)]


def test_preflight_target_parsing() -> None:
    def target(value: str | None) -> tuple[str, int] | None:
        return Prober(
            helo="probe.verifier-lab.test", null_sender=True, preflight_target=value, port=2525
        ).preflight_address()

    assert target(None) is None
    assert target("mx.example.net") == ("mx.example.net", 2525)
    assert target("192.0.2.1:25") == ("192.0.2.1", 25)
    assert target("[2001:db8::1]:587") == ("2001:db8::1", 587)
    assert target("2001:db8::1") == ("2001:db8::1", 2525)
    with pytest.raises(ConfigError):
        target("mx.example.net:smtp")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"port": 70000},
        {"starttls": "sometimes"},
        {"catch_all_ttl": 0},
        {"address_deadline": -1},
        {"catch_all_probes": 0},
        {"max_rcpt_per_connection": 0},
        {"max_reconnects": -1},
        {"retry_schedule": (60, 0)},
    ],
)
def test_bad_prober_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Prober(helo="probe.verifier-lab.test", null_sender=True, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "socks5://", "socks5://127.0.0.1:99999", "nonsense"]
)
def test_bad_proxy_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        ProxyConfig(default=url)
    with pytest.raises(ConfigError):
        ProxyConfig(by_provider={"google": url})


def test_proxy_routing_falls_back_to_the_default() -> None:
    config = ProxyConfig(
        default="socks5://127.0.0.1:1080", by_provider={"google": "socks4://127.0.0.1:1081"}
    )
    assert config.for_provider("google") == "socks4://127.0.0.1:1081"
    assert config.for_provider("yahoo") == "socks5://127.0.0.1:1080"
    assert config.for_provider(None) == "socks5://127.0.0.1:1080"
    assert ProxyConfig().for_provider("google") is None


async def test_refusing_greeting_fails_with_its_text() -> None:
    with fake_smtp(Behaviour(banner="554 5.7.1 go away")) as fake:
        result = await check_port25("127.0.0.1", fake.port, wait=2)
    assert not result.ok
    assert "554 5.7.1 go away" in result.detail


async def test_multiline_greeting_passes() -> None:
    with fake_smtp(Behaviour(banner="220-mx.fake.test first\r\n220 second")) as fake:
        result = await check_port25("127.0.0.1", fake.port, wait=2)
    assert result.ok
    assert result.detail == "220 mx.fake.test first"


async def test_overlong_greeting_line_fails_without_raising() -> None:
    with fake_smtp(Behaviour(banner="220 " + "x" * 70_000)) as fake:
        result = await check_port25("127.0.0.1", fake.port, wait=2)
    assert not result.ok
    assert "unexpected greeting" in result.detail
