"""The mail lab itself: its DNS data served by NSD, limits that apply to loopback, lifecycle."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import dns.resolver
import pytest
from lab.dnslab import DnsLab
from lab.maillab import Listener, MailDomain, MailLab, MailLabError

from emailintel.smtp.session import SmtpSession, Timeouts

HELO = "probe.verifier.test"
FAST = Timeouts(connect=2, banner=2, command=2)


def test_dns_zones_describe_every_domain(mail_lab: MailLab) -> None:
    zones = mail_lab.dns_zones()
    a_records = {
        name.rstrip("."): rdata
        for records in zones.values()
        for name, rtype, rdata in records
        if rtype == "A"
    }
    for domain in mail_lab.domains:
        mx = [rdata for name, rtype, rdata in zones[domain.name] if rtype == "MX"]
        if domain.dns != "mx":
            assert ("@", "A", mail_lab.ip(domain.mx[0])) in zones[domain.name]
            assert mx == (["0 ."] if domain.dns == "null_mx" else [])
            continue
        assert len(mx) == len(domain.mx)
        for (pref, host), listener in zip((r.split() for r in mx), domain.mx, strict=True):
            assert a_records[host.rstrip(".")] == mail_lab.ip(listener)
            assert int(pref) > 0
    prefs = sorted(int(r.split()[0]) for _, t, r in zones["multi.test"] if t == "MX")
    assert prefs == [10, 20]


def test_nsd_serves_the_lab_zones(mail_lab: MailLab) -> None:
    with DnsLab(mail_lab.dns_zones()) as dns_lab:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns_lab.host]
        resolver.port = dns_lab.port
        for domain in ("company.test", "bench0042.test"):
            answer = resolver.resolve(domain, "MX")
            target = str(answer[0].exchange).rstrip(".")  # type: ignore[attr-defined]
            address = resolver.resolve(target, "A")[0].to_text()
            assert [(target, address)] == mail_lab.mx(domain)
        implicit = resolver.resolve("nomx.test", "A")[0].to_text()
        assert implicit == mail_lab.ip("main")
        null = resolver.resolve("nullmx.test", "MX")[0]
        assert (null.preference, str(null.exchange)) == (0, ".")  # type: ignore[attr-defined]


async def test_anvil_limits_apply_to_loopback_clients(mail_lab: MailLab) -> None:
    source = mail_lab.fresh_source()
    limit = mail_lab.strict.connection_count_limit
    ip = mail_lab.ip("strict")
    held = [
        SmtpSession(ip, helo=HELO, timeouts=FAST, source_address=source, starttls="never")
        for _ in range(limit)
    ]
    for session in held:
        await session.open()
    try:
        async with SmtpSession(
            ip, helo=HELO, timeouts=FAST, source_address=source, starttls="never"
        ) as extra:
            assert extra.banner is not None
            assert extra.banner.code == 421
            assert "too many connections" in extra.banner.message
            assert extra.refusal == extra.banner
    finally:
        for session in held:
            await session.close()


def test_fresh_sources_are_new_subnets_outside_the_lab(mail_lab: MailLab) -> None:
    sources = [mail_lab.fresh_source() for _ in range(300)]
    subnets = {ipaddress.ip_network(f"{s}/24", strict=False) for s in sources}
    assert len(subnets) == len(sources)
    lab_net = ipaddress.ip_network(f"{mail_lab.ip('main')}/24", strict=False)
    assert all(ipaddress.ip_address(s) in ipaddress.ip_network("127.0.0.0/8") for s in sources)
    assert lab_net not in subnets


@pytest.mark.lab
def test_start_and_stop_free_everything() -> None:
    lab = MailLab(
        listeners=[Listener("only", "mx.solo.test", 2)],
        domains=[MailDomain("solo.test", mx=("only",))],
        tls=False,
    )
    with lab:
        ip = lab.ip("only")
        directory = lab.dir
        assert directory is not None
        with socket.create_connection((ip, 25), timeout=2) as sock:
            assert sock.recv(100).startswith(b"220 mx.solo.test")
    assert lab.dir is None
    assert not directory.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((ip, 25), timeout=2):
        pass
    lab.stop()  # idempotent


@pytest.mark.lab
def test_failed_start_cleans_up(tmp_path: Path) -> None:
    lab = MailLab(
        listeners=[Listener("only", "mx.grey.test", 2)],
        domains=[MailDomain("grey.test", mx=("only",), greylist=True)],
        postgrey="/bin/false",
        workdir=tmp_path,
    )
    with pytest.raises(MailLabError, match="postgrey"):
        lab.start()
    assert lab.dir is None
    assert list(tmp_path.iterdir()) == []


def test_missing_binary_is_reported() -> None:
    lab = MailLab(postfix="/nonexistent/postfix")
    with pytest.raises(MailLabError, match="missing"):
        lab.start()
    assert lab.dir is None


@pytest.mark.parametrize(
    ("listeners", "domains"),
    [
        ([Listener("a", "mx.a.test", 2)], [MailDomain("a.test", mx=("b",))]),
        ([Listener("a", "mx.a.test", 2), Listener("b", "mx.b.test", 2)], []),
        ([Listener("a", "mx.a.test", 2), Listener("a", "mx.b.test", 3)], []),
        ([Listener("a", "mx.a.test", 255)], []),
        ([Listener("a", "mx.a.test", 2)], [MailDomain("a.test", mx=())]),
        (
            [Listener("a", "mx.a.test", 2)],
            [MailDomain("a.test", mx=("a",)), MailDomain("a.test", mx=("a",))],
        ),
    ],
)
def test_bad_lab_data_raises(listeners: list[Listener], domains: list[MailDomain]) -> None:
    with pytest.raises(MailLabError):
        MailLab(listeners=listeners, domains=domains)


def test_addresses_before_start_raise() -> None:
    lab = MailLab(listeners=[Listener("a", "mx.a.test", 2)])
    with pytest.raises(MailLabError):
        lab.ip("a")
    with pytest.raises(MailLabError):
        lab.fresh_source()
