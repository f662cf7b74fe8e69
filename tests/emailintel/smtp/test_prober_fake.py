"""verify() against replies Postfix cannot give on loopback: an aiosmtpd MX behind the lab NSD.

fake.test's MX is 127.0.0.1; each test's fake server listens on its own port, which the prober
is told. Also: SOCKS5 routing through a loopback proxy, and a dead proxy.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from lab.dnslab import DnsLab, free_port
from lab.fakesmtp import SPAMHAUS_REPLY, Behaviour, FakeSmtpServer, fake_smtp
from lab.probers import lab_prober
from lab.sockslab import Socks5Server

from emailintel.dns import DnsResolver
from emailintel.models import Reason, Verdict
from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.providers import ProviderRule
from emailintel.smtp.proxies import ProxyConfig
from emailintel.smtp.session import Timeouts
from emailintel.verify import Validator, verify, verify_many

KNOWN = frozenset(
    {"ann@fake.test", "bob@fake.test", "cy@fake.test", "di@fake.test", "ed@fake.test"}
)


def make_prober(port: int, **overrides: Any) -> Prober:
    timeouts = Timeouts(connect=2, banner=3, command=3)
    return lab_prober(**{"timeouts": timeouts, "port": port, **overrides})


@pytest.fixture
def validator(mail_dns: DnsLab) -> Validator:
    return Validator(resolver=DnsResolver([mail_dns.nameserver]))


async def test_spamhaus_block_is_unknown_never_invalid(validator: Validator) -> None:
    behaviour = Behaviour(rcpt_reply=SPAMHAUS_REPLY)
    with fake_smtp(behaviour) as fake:
        prober = make_prober(fake.port)
        results = [
            r async for r in verify_many(["ann@fake.test", "bob@fake.test"], prober=prober,
                                         validator=validator)
        ]  # fmt: skip
    assert behaviour.received == ["ann@fake.test"]  # blocked once: no more RCPTs that session
    assert [r.reasons[0] for r in results] == [Reason.BLOCKED_BY_SERVER] * 2
    result = results[0]
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons[0] is Reason.BLOCKED_BY_SERVER
    assert Reason.MAILBOX_NOT_FOUND not in result.reasons
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert result.smtp.reply.enhanced_code == "5.7.1"


@pytest.mark.parametrize(
    ("reply", "reason", "verdict"),
    [
        ("552 5.2.2 <{ip}> Mailbox full", Reason.MAILBOX_FULL, Verdict.RISKY),
        ("550 5.2.1 Mailbox disabled for this recipient", Reason.MAILBOX_DISABLED, Verdict.INVALID),
        ("451 4.3.0 Temporary local problem", Reason.TEMP_FAILURE, Verdict.UNKNOWN),
    ],
)
async def test_mailbox_states(
    validator: Validator, reply: str, reason: Reason, verdict: Verdict
) -> None:
    with fake_smtp(Behaviour(rcpt_reply=reply)) as fake:
        result = await verify("ann@fake.test", prober=make_prober(fake.port), validator=validator)
    assert result.verdict is verdict
    assert result.reasons[0] is reason


async def test_catch_all_probe_comes_after_the_real_recipients(validator: Validator) -> None:
    behaviour = Behaviour()  # accepts everything
    with fake_smtp(behaviour) as fake:
        prober = make_prober(fake.port)
        results = [
            r async for r in verify_many(["ann@fake.test", "bob@fake.test"], prober=prober,
                                         validator=validator)
        ]  # fmt: skip
    assert behaviour.received[:2] == ["ann@fake.test", "bob@fake.test"]
    assert len(behaviour.received) == 3
    assert re.fullmatch(r"[a-z]+[._]?[a-z]+\d{1,2}@fake\.test", behaviour.received[2])
    assert all(Reason.CATCH_ALL in r.reasons for r in results)
    assert all(r.verdict is Verdict.RISKY for r in results)


async def test_catch_all_verdict_is_cached_per_domain_and_mx(validator: Validator) -> None:
    behaviour = Behaviour()
    with fake_smtp(behaviour) as fake:
        prober = make_prober(fake.port)
        await verify("ann@fake.test", prober=prober, validator=validator)
        second = await verify("bob@fake.test", prober=prober, validator=validator)
    assert len(behaviour.received) == 3  # ann, the random probe, bob: no second random probe
    assert second.smtp is not None
    assert second.smtp.catch_all is True


async def test_no_random_probe_after_a_rejection(validator: Validator) -> None:
    behaviour = Behaviour(known_users=KNOWN)
    with fake_smtp(behaviour) as fake:
        result = await verify("zed@fake.test", prober=make_prober(fake.port), validator=validator)
    assert behaviour.received == ["zed@fake.test"]
    assert result.verdict is Verdict.INVALID


async def test_too_many_recipients_reconnects(validator: Validator) -> None:
    behaviour = Behaviour(known_users=KNOWN, max_recipients=2)
    with fake_smtp(behaviour) as fake:
        prober = make_prober(fake.port)
        results = {
            r.address: r
            async for r in verify_many(sorted(KNOWN), prober=prober, validator=validator)
        }
    assert all(results[a].verdict is Verdict.VALID for a in KNOWN)
    assert prober.sessions_opened >= 3


async def test_421_mid_session_is_a_temp_failure_after_reconnects(validator: Validator) -> None:
    behaviour = Behaviour(disconnect_after_rcpts=0)
    with fake_smtp(behaviour) as fake:
        prober = make_prober(fake.port, max_reconnects=1)
        result = await verify("ann@fake.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons[0] is Reason.TEMP_FAILURE
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert result.smtp.reply.code == 421
    assert prober.sessions_opened == 2


async def test_421_then_success_on_reconnect(validator: Validator) -> None:
    behaviour = Behaviour(known_users=KNOWN, disconnect_after_rcpts=2)
    with fake_smtp(behaviour) as fake:
        prober = make_prober(fake.port)
        results = {
            r.address: r
            async for r in verify_many(sorted(KNOWN), prober=prober, validator=validator)
        }
    assert all(results[a].verdict is Verdict.VALID for a in KNOWN)


async def test_4xx_banner_moves_to_the_next_mx(validator: Validator, fake_second_mx: str) -> None:
    busy = FakeSmtpServer("127.0.0.1", Behaviour(banner="421 4.3.2 mx1 busy, try mx2"))
    with busy:
        second = Behaviour(known_users=frozenset({"ann@fakemulti.test"}))
        with FakeSmtpServer(fake_second_mx, second, port=busy.port):
            prober = make_prober(busy.port)
            result = await verify("ann@fakemulti.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.VALID
    assert result.smtp is not None
    assert result.smtp.mx_host == "mx2.fakemulti.test"


async def test_5xx_banner_is_blocked(validator: Validator) -> None:
    with fake_smtp(Behaviour(banner="554 5.7.1 No SMTP service here")) as fake:
        result = await verify("ann@fake.test", prober=make_prober(fake.port), validator=validator)
    assert result.reasons[0] is Reason.BLOCKED_BY_SERVER


async def test_command_timeout(validator: Validator) -> None:
    with fake_smtp(Behaviour(rcpt_delay=2.0)) as fake:
        prober = make_prober(fake.port, timeouts=Timeouts(connect=2, banner=2, command=0.3))
        result = await verify("ann@fake.test", prober=prober, validator=validator)
    assert result.reasons[0] is Reason.TIMEOUT
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert result.smtp.reply.stage == "rcpt"


async def test_accept_all_provider_is_not_valid_and_skips_the_random_probe(
    validator: Validator,
) -> None:
    rule = ProviderRule(
        name="labtenant",
        suffixes=("protection.lab.test",),
        accepts_all=True,
        skip_catch_all_probe=True,
        reliable=False,
    )
    behaviour = Behaviour()
    with fake_smtp(behaviour) as fake:
        prober = make_prober(fake.port, providers=[rule])
        result = await verify("ann@tenant.test", prober=prober, validator=validator)
    assert behaviour.received == ["ann@tenant.test"]
    assert result.verdict is Verdict.RISKY
    assert Reason.PROVIDER_ACCEPTS_ALL in result.reasons
    assert result.smtp is not None
    assert result.smtp.provider == "labtenant"


async def test_socks5_proxy_carries_the_session(validator: Validator) -> None:
    behaviour = Behaviour(known_users=KNOWN)
    with fake_smtp(behaviour) as fake:
        async with Socks5Server() as proxy:
            prober = make_prober(fake.port, proxies=ProxyConfig(default=proxy.url))
            result = await verify("ann@fake.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.VALID
    assert proxy.connects == [("127.0.0.1", fake.port)]


async def test_proxy_routed_by_provider(validator: Validator) -> None:
    rule = ProviderRule(name="labtenant", suffixes=("protection.lab.test",))
    with fake_smtp(Behaviour()) as fake:
        async with Socks5Server() as proxy:
            dead = f"socks5://127.0.0.1:{free_port('127.0.0.1')}"
            proxies = ProxyConfig(default=dead, by_provider={"labtenant": proxy.url})
            prober = make_prober(fake.port, proxies=proxies, providers=[rule])
            routed = await verify("ann@tenant.test", prober=prober, validator=validator)
            default = await verify("ann@fake.test", prober=prober, validator=validator)
    assert Reason.SMTP_ACCEPTED in routed.reasons
    assert proxy.connects
    assert default.reasons[0] is Reason.PROXY_ERROR


async def test_dead_proxy_is_proxy_error(validator: Validator) -> None:
    behaviour = Behaviour()
    with fake_smtp(behaviour) as fake:
        dead = f"socks5://127.0.0.1:{free_port('127.0.0.1')}"
        prober = make_prober(fake.port, proxies=ProxyConfig(default=dead))
        result = await verify("ann@fake.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons[0] is Reason.PROXY_ERROR
    assert behaviour.received == []


async def test_required_tls_without_starttls_is_tls_error(validator: Validator) -> None:
    with fake_smtp(Behaviour()) as fake:
        prober = make_prober(fake.port, starttls="required", plain_fallback=False)
        result = await verify("ann@fake.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons[0] is Reason.TLS_ERROR


async def test_garbage_banner_is_a_protocol_error(validator: Validator) -> None:
    with fake_smtp(Behaviour(banner="hello, this is not SMTP")) as fake:
        result = await verify("ann@fake.test", prober=make_prober(fake.port), validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons[0] is Reason.SMTP_PROTOCOL_ERROR
    assert Reason.MAILBOX_NOT_FOUND not in result.reasons


async def test_catch_all_probe_cut_off_is_inconclusive(validator: Validator) -> None:
    # The real recipient is accepted, then the server hangs up on the random one.
    with fake_smtp(Behaviour(disconnect_after_rcpts=1)) as fake:
        prober = make_prober(fake.port)
        result = await verify("ann@fake.test", prober=prober, validator=validator)
    assert Reason.SMTP_ACCEPTED in result.reasons
    assert Reason.CATCH_ALL_INCONCLUSIVE in result.reasons
    assert result.smtp is not None
    assert result.smtp.catch_all is None
    assert prober.cached_catch_all("fake.test", "mx.fake.test") is None


async def test_overall_deadline_per_address(validator: Validator) -> None:
    with fake_smtp(Behaviour(rcpt_delay=1.0)) as fake:
        prober = make_prober(fake.port, address_deadline=0.3)
        result = await verify("ann@fake.test", prober=prober, validator=validator)
    assert result.reasons[0] is Reason.TIMEOUT
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert "deadline" in result.smtp.reply.message


async def test_politeness_backs_off_a_host_after_421(validator: Validator) -> None:
    behaviour = Behaviour(disconnect_after_rcpts=0)
    with fake_smtp(behaviour) as fake:
        config = PolitenessConfig(
            connections_per_host=4, rcpt_per_minute_per_host=1e6, jitter=0, backoff=30
        )
        prober = make_prober(fake.port, politeness=config, max_reconnects=0)
        await verify("ann@fake.test", prober=prober, validator=validator)
        assert prober.politeness.blocked_for("mx.fake.test") > 20
