"""emailintel.dns against a real NSD (tests/lab): statuses, ordering, fallback, cache, failures."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import dns.resolver
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lab.dnslab import BlackHoleDns, CountingRelay, DnsLab, Record, free_port

import emailintel.dns as edns
from emailintel.dns import DnsResolver, lookup_mx, parse_nameserver, to_query_name
from emailintel.errors import AddressError, ConfigError, DnsError

# --- nameserver strings, domains and configuration (no network) ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("1.1.1.1", ("1.1.1.1", 53)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:DB8::1]", ("2001:db8::1", 53)),
        (" 10.0.0.1:53 ", ("10.0.0.1", 53)),
    ],
)
def test_parse_nameserver_accepts_addresses_with_optional_port(
    text: str, expected: tuple[str, int]
) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "localhost",
        "dns.google:53",
        "300.1.1.1",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "1.2.3.4:abc",
        "1.2.3.4:",
        "1.2.3.4:５３",
        "[::1",
        "[::1]:",
        "[::1]x",
        "[1.2.3.4]:53",
        "https://1.1.1.1/dns-query",
    ],
)
def test_parse_nameserver_rejects_anything_else(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid nameserver"):
        parse_nameserver(text)


@given(st.ip_addresses(), st.integers(1, 65535))
def test_formatted_nameservers_parse_back(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    text = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    assert parse_nameserver(text) == (str(address), port)


@given(st.text(max_size=60))
def test_parse_nameserver_raises_only_config_error(text: str) -> None:
    try:
        address, port = parse_nameserver(text)
    except ConfigError:
        return
    assert ipaddress.ip_address(address)
    assert 0 < port < 65536


def test_resolver_keeps_nameservers_in_canonical_form() -> None:
    resolver = DnsResolver(["127.0.0.1:5353", "::1", "[::1]:5300"])
    assert resolver.nameservers == ("127.0.0.1:5353", "[::1]:53", "[::1]:5300")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((["nonsense"],), {}, "invalid nameserver"),
        (([],), {}, "at least one"),
        (("127.0.0.1",), {}, "sequence of strings"),
        ((["127.0.0.1"],), {"timeout": 0}, "timeout"),
        ((["127.0.0.1"],), {"lifetime": -1.0}, "lifetime"),
        ((["127.0.0.1"],), {"max_cache_entries": -1}, "max_cache_entries"),
        ((["127.0.0.1"],), {"negative_ttl": -1.0}, "negative_ttl"),
    ],
)
def test_bad_resolver_configuration_raises_config_error(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        DnsResolver(*args, **kwargs)  # type: ignore[arg-type]


def test_non_string_nameserver_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="expected a string"):
        DnsResolver([5353])  # type: ignore[list-item]


def test_nameservers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(edns.NAMESERVERS_ENV, " 127.0.0.1:5353 ,[::1]:54")
    assert DnsResolver().nameservers == ("127.0.0.1:5353", "[::1]:54")
    assert DnsResolver.from_env().nameservers == ("127.0.0.1:5353", "[::1]:54")


def test_a_bad_environment_nameserver_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(edns.NAMESERVERS_ENV, "127.0.0.1,,")
    with pytest.raises(ConfigError, match="invalid nameserver"):
        DnsResolver()


def test_without_environment_the_system_configuration_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(edns.NAMESERVERS_ENV, "  ")
    system = dns.resolver.Resolver(configure=True)
    expected = tuple(
        f"[{ns}]:{system.port}" if ":" in str(ns) else f"{ns}:{system.port}"
        for ns in system.nameservers
    )
    assert DnsResolver().nameservers == expected


def test_from_env_reads_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(edns.NAMESERVERS_ENV, "127.0.0.1")
    monkeypatch.setenv(edns.TIMEOUT_ENV, "0.25")
    resolver = DnsResolver.from_env()
    assert (resolver.timeout, resolver.lifetime) == (0.25, 0.25)
    assert DnsResolver.from_env(timeout=2.0).timeout == 2.0
    monkeypatch.setenv(edns.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match=edns.TIMEOUT_ENV):
        DnsResolver.from_env()


def test_lifetime_defaults_to_one_attempt_per_nameserver() -> None:
    assert DnsResolver(["127.0.0.1", "127.0.0.2"], timeout=1.5).lifetime == 3.0
    assert DnsResolver(["127.0.0.1"], timeout=1.5, lifetime=4.0).lifetime == 4.0


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("ACME.Test.", "acme.test"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("BÜCHER.test", "xn--bcher-kva.test"),
        ("_dmarc.acme.test", "_dmarc.acme.test"),
    ],
)
def test_domains_are_normalised_to_idna(domain: str, expected: str) -> None:
    name, text = to_query_name(domain)
    assert text == expected
    assert name.to_text() == expected + "."


@given(st.text(max_size=80))
def test_to_query_name_raises_only_address_error(text: str) -> None:
    try:
        name, ascii_text = to_query_name(text)
    except AddressError:
        return
    assert ascii_text.isascii()
    assert name.to_text() == ascii_text + "."


_LDH_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).filter(
    lambda label: not label.startswith("-") and not label.endswith("-")
)


@given(st.lists(_LDH_LABEL, min_size=1, max_size=6))
def test_ldh_domains_round_trip_in_lower_case(labels: list[str]) -> None:
    domain = ".".join(labels)
    assert to_query_name(domain.upper() + ".")[1] == domain


@pytest.mark.parametrize(
    "domain",
    [
        "",
        ".",
        "a..test",
        "-a.test",
        "a-.test",
        "a b.test",
        "*.test",
        "x" * 64 + ".test",
        ".".join(["abcdefghi"] * 26),
        "bü cher.test",
        "a\\.b.test",
        123,
    ],
)
async def test_invalid_domains_raise_address_error(domain: object) -> None:
    resolver = DnsResolver(["127.0.0.1"])
    with pytest.raises(AddressError) as caught:
        await resolver.lookup_mx(domain)  # type: ignore[arg-type]
    assert caught.value.code == "domain_invalid"
    with pytest.raises(AddressError):
        await resolver.resolve_host(domain)  # type: ignore[arg-type]


# --- against the lab NSD ---


@pytest.fixture
def resolver(dns_lab: DnsLab) -> DnsResolver:
    return DnsResolver([dns_lab.nameserver], timeout=2.0)


@pytest.fixture
def relay(dns_lab: DnsLab) -> Iterator[CountingRelay]:
    with CountingRelay(dns_lab.nameserver) as server:
        assert isinstance(server, CountingRelay)
        yield server


@pytest.fixture
def black_hole() -> Iterator[BlackHoleDns]:
    with BlackHoleDns() as server:
        assert isinstance(server, BlackHoleDns)
        yield server


async def test_single_mx(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("acme.test")
    assert facts.status == "ok"
    assert facts.domain == "acme.test"
    assert [(m.preference, m.host, m.addresses) for m in facts.mx] == [(10, "mx.acme.test", ())]
    assert facts.fallback is None
    assert facts.error is None
    assert facts.accepts_mail is True
    assert facts.elapsed_ms is not None
    assert facts.elapsed_ms >= 0


async def test_mx_sorted_by_preference_then_host(resolver: DnsResolver) -> None:
    multi = await resolver.lookup_mx("multi.test")
    assert [(m.preference, m.host) for m in multi.mx] == [
        (10, "mx1.multi.test"),
        (20, "mx2.multi.test"),
    ]
    same = await resolver.lookup_mx("samepref.test")
    assert [(m.preference, m.host) for m in same.mx] == [
        (5, "mx-c.samepref.test"),
        (10, "mx-a.samepref.test"),
        (10, "mx-b.samepref.test"),
    ]


async def test_null_mx_means_no_mail_even_with_an_a_record(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("nullmx.test", resolve_addresses=True)
    assert (facts.status, facts.mx, facts.fallback) == ("null_mx", (), None)
    assert facts.accepts_mail is False


async def test_null_mx_next_to_real_mx_hosts_is_ignored(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("mixednull.test")
    assert facts.status == "ok"
    assert [(m.preference, m.host) for m in facts.mx] == [(10, "mx.acme.test")]


async def test_mx_is_found_through_a_cname(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("mail.cname.test", resolve_addresses=True)
    assert (facts.status, facts.domain) == ("ok", "mail.cname.test")
    assert [(m.host, m.addresses) for m in facts.mx] == [("mx.acme.test", ("127.0.0.2",))]


async def test_implicit_mx_from_a_record(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("nomx.test")
    assert (facts.status, facts.fallback) == ("ok", "A")
    assert [(m.preference, m.host, m.addresses) for m in facts.mx] == [
        (0, "nomx.test", ("127.0.0.8",))
    ]


async def test_implicit_mx_lists_ipv4_first_then_ipv6(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("dualstack.test")
    assert facts.fallback == "A"
    assert facts.mx[0].addresses == ("127.0.0.13", "127.0.0.14", "::1")


async def test_implicit_mx_from_aaaa_only(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("aaaaonly.test")
    assert (facts.status, facts.fallback) == ("ok", "AAAA")
    assert facts.mx[0].addresses == ("::1",)


async def test_existing_domain_without_mx_or_address_is_no_mx(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("empty.test")
    assert (facts.status, facts.mx, facts.error) == ("no_mx", (), None)
    assert facts.accepts_mail is False


@pytest.mark.parametrize("domain", ["nothing-here.test", "sub.acme.test", "gmail.com"])
async def test_unknown_names_are_nxdomain(resolver: DnsResolver, domain: str) -> None:
    facts = await resolver.lookup_mx(domain)
    assert (facts.status, facts.mx) == ("nxdomain", ())
    assert facts.accepts_mail is False


async def test_idn_domain_is_queried_as_idna(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("bücher.test", resolve_addresses=True)
    assert facts.domain == "xn--bcher-kva.test"
    assert [(m.host, m.addresses) for m in facts.mx] == [("mx.xn--bcher-kva.test", ("127.0.0.15",))]


async def test_mx_pointing_to_a_missing_host_is_unresolvable(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("badmx.test", resolve_addresses=True)
    assert facts.status == "mx_unresolvable"
    assert facts.accepts_mail is False
    assert [(m.host, m.addresses) for m in facts.mx] == [("mx.missing.badmx.test", ())]
    # Without address resolution the MX answer alone is all there is to report.
    assert (await resolver.lookup_mx("badmx.test")).status == "ok"


ROUTE_ZONES: dict[str, list[Record]] = {
    "allgone.test": [("@", "MX", "10 gone"), ("@", "MX", "20 mx.nowhere-at-all.test.")],
    "nodatamx.test": [("@", "MX", "10 txtonly"), ("txtonly", "TXT", '"no address here"')],
    "halfgone.test": [("@", "MX", "10 gone"), ("@", "MX", "20 mx"), ("mx", "A", "127.0.0.31")],
}


@pytest.fixture(scope="module")
def route_lab() -> Iterator[DnsLab]:
    """NSD with MX hosts that are NXDOMAIN, have no address records, or half of both."""
    with DnsLab(ROUTE_ZONES) as lab:
        yield lab


@pytest.mark.parametrize("domain", ["allgone.test", "nodatamx.test"])
async def test_no_mx_host_with_an_address_is_unresolvable(route_lab: DnsLab, domain: str) -> None:
    resolver = DnsResolver([route_lab.nameserver], timeout=2.0)
    facts = await resolver.lookup_mx(domain, resolve_addresses=True)
    assert (facts.status, facts.error) == ("mx_unresolvable", None)
    assert facts.mx
    assert all(m.addresses == () for m in facts.mx)


async def test_one_mx_host_with_an_address_is_enough(route_lab: DnsLab) -> None:
    resolver = DnsResolver([route_lab.nameserver], timeout=2.0)
    facts = await resolver.lookup_mx("halfgone.test", resolve_addresses=True)
    assert facts.status == "ok"
    assert [m.addresses for m in facts.mx] == [(), ("127.0.0.31",)]


async def test_mx_host_lookup_timeout_is_a_timeout_not_unresolvable(dns_lab: DnsLab) -> None:
    with CountingRelay(dns_lab.nameserver, drop=["AAAA"]) as relay:
        resolver = DnsResolver([relay.nameserver], timeout=0.3)
        facts = await resolver.lookup_mx("badmx.test", resolve_addresses=True)
        assert facts.status == "timeout"
        assert facts.error is not None
        assert "mx.missing.badmx.test" in facts.error
        assert facts.accepts_mail is None
        # An MX host that has an address answers the question, whatever the other family does.
        assert (await resolver.lookup_mx("acme.test", resolve_addresses=True)).status == "ok"


async def test_resolve_addresses_fills_every_mx_host(resolver: DnsResolver) -> None:
    multi = await resolver.lookup_mx("multi.test", resolve_addresses=True)
    assert [m.addresses for m in multi.mx] == [("127.0.0.6",), ("127.0.0.7",)]
    mixed = await resolver.lookup_mx("mixedmx.test", resolve_addresses=True)
    assert [(m.host, m.addresses) for m in mixed.mx] == [
        ("mx.mixedmx.test", ("127.0.0.16",)),
        ("mx.dual.test", ("127.0.0.17", "::1")),
    ]


async def test_resolve_host(resolver: DnsResolver) -> None:
    assert await resolver.resolve_host("mx.dual.test") == ("127.0.0.17", "::1")
    assert await resolver.resolve_host("MX.ACME.test.") == ("127.0.0.2",)
    assert await resolver.resolve_host("missing.acme.test") == ()
    assert await resolver.resolve_host("empty.test") == ()


async def test_servfail_is_an_error_not_an_answer(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_mx("servfail.test")
    assert facts.status == "error"
    assert facts.error is not None
    assert "SERVFAIL" in facts.error
    assert facts.accepts_mail is None
    with pytest.raises(DnsError, match="SERVFAIL"):
        await resolver.resolve_host("servfail.test")


async def test_unreachable_nameserver_is_an_error() -> None:
    closed = DnsResolver([f"127.0.0.1:{free_port('127.0.0.1')}"], timeout=0.3)
    facts = await closed.lookup_mx("acme.test")
    assert facts.status in ("error", "timeout")
    assert facts.error is not None


async def test_silent_nameserver_is_a_timeout(black_hole: BlackHoleDns) -> None:
    resolver = DnsResolver([black_hole.nameserver], timeout=0.3)
    facts = await resolver.lookup_mx("acme.test")
    assert (facts.status, facts.mx) == ("timeout", ())
    assert facts.error is not None
    assert "no answer" in facts.error
    assert facts.accepts_mail is None
    assert black_hole.count("acme.test", "MX") >= 1
    with pytest.raises(DnsError, match="no answer"):
        await resolver.resolve_host("mx.acme.test")


async def test_timeout_on_the_address_fallback_is_a_timeout(relay: CountingRelay) -> None:
    relay.drop = {"A"}
    resolver = DnsResolver([relay.nameserver], timeout=0.3)
    facts = await resolver.lookup_mx("nomx.test")
    assert facts.status == "timeout"
    # one family answering is enough for the implicit MX
    partial = await resolver.lookup_mx("aaaaonly.test")
    assert (partial.status, partial.fallback, partial.mx[0].addresses) == ("ok", "AAAA", ("::1",))


async def test_servfail_on_the_address_fallback_is_an_error(relay: CountingRelay) -> None:
    relay.servfail = {"AAAA"}
    resolver = DnsResolver([relay.nameserver], timeout=2.0)
    facts = await resolver.lookup_mx("empty.test")
    assert facts.status == "error"
    assert facts.error is not None
    assert "AAAA" in facts.error


async def test_failed_mx_host_lookups_are_an_error(relay: CountingRelay) -> None:
    relay.servfail = {"A", "AAAA"}
    resolver = DnsResolver([relay.nameserver], timeout=2.0)
    facts = await resolver.lookup_mx("acme.test", resolve_addresses=True)
    assert facts.status == "error"
    assert facts.error is not None
    assert "SERVFAIL" in facts.error
    assert [(m.host, m.addresses) for m in facts.mx] == [("mx.acme.test", ())]


# --- cache and single-flight, counted at a relay in front of NSD ---


async def test_second_lookup_is_served_from_the_cache(relay: CountingRelay) -> None:
    resolver = DnsResolver([relay.nameserver], timeout=2.0)
    first = await resolver.lookup_mx("acme.test", resolve_addresses=True)
    second = await resolver.lookup_mx("acme.test", resolve_addresses=True)
    assert first.model_dump(exclude={"elapsed_ms"}) == second.model_dump(exclude={"elapsed_ms"})
    assert (relay.count("acme.test", "MX"), relay.count("mx.acme.test", "A")) == (1, 1)
    resolver.clear_cache()
    await resolver.lookup_mx("acme.test")
    assert relay.count("acme.test", "MX") == 2


@pytest.mark.parametrize(
    ("domain", "rdtype"), [("nothing-here.test", "MX"), ("empty.test", "AAAA")]
)
async def test_negative_answers_are_cached(relay: CountingRelay, domain: str, rdtype: str) -> None:
    resolver = DnsResolver([relay.nameserver], timeout=2.0)
    await resolver.lookup_mx(domain)
    await resolver.lookup_mx(domain)
    assert relay.count(domain, rdtype) == 1


async def test_negative_ttl_override(relay: CountingRelay) -> None:
    resolver = DnsResolver([relay.nameserver], timeout=2.0, negative_ttl=0)
    await resolver.lookup_mx("nothing-here.test")
    await resolver.lookup_mx("nothing-here.test")
    assert relay.count("nothing-here.test", "MX") == 2


async def test_cache_can_be_disabled(relay: CountingRelay) -> None:
    resolver = DnsResolver([relay.nameserver], timeout=2.0, cache=False)
    await resolver.lookup_mx("acme.test")
    await resolver.lookup_mx("acme.test")
    assert relay.count("acme.test", "MX") == 2


async def test_cache_is_bounded(relay: CountingRelay) -> None:
    resolver = DnsResolver([relay.nameserver], timeout=2.0, max_cache_entries=1)
    for domain in ("acme.test", "multi.test", "acme.test"):
        await resolver.lookup_mx(domain)
    assert relay.count("acme.test", "MX") == 2


async def test_cached_answers_expire_with_their_ttl(relay: CountingRelay) -> None:
    resolver = DnsResolver([relay.nameserver], timeout=2.0)
    for name in ("shortttl.test", "gone.shortttl.test"):
        await resolver.lookup_mx(name)
        await resolver.lookup_mx(name)
        assert relay.count(name, "MX") == 1
    await asyncio.sleep(1.2)  # every TTL in shortttl.test, positive and negative, is 1 s
    for name in ("shortttl.test", "gone.shortttl.test"):
        await resolver.lookup_mx(name)
        assert relay.count(name, "MX") == 2


async def test_failures_are_not_cached(relay: CountingRelay, black_hole: BlackHoleDns) -> None:
    servfail = DnsResolver([relay.nameserver], timeout=2.0)
    await servfail.lookup_mx("servfail.test")
    await servfail.lookup_mx("servfail.test")
    assert relay.count("servfail.test", "MX") == 2
    silent = DnsResolver([black_hole.nameserver], timeout=0.3)
    assert (await silent.lookup_mx("acme.test")).status == "timeout"
    first_count = black_hole.count("acme.test", "MX")
    assert (await silent.lookup_mx("acme.test")).status == "timeout"
    assert black_hole.count("acme.test", "MX") > first_count


async def test_concurrent_lookups_share_one_query(relay: CountingRelay) -> None:
    relay.delay = 0.2
    resolver = DnsResolver([relay.nameserver], timeout=2.0, cache=False)
    results = await asyncio.gather(*(resolver.lookup_mx("multi.test") for _ in range(10)))
    assert relay.count("multi.test", "MX") == 1
    assert len({r.model_dump_json(exclude={"elapsed_ms"}) for r in results}) == 1
    assert results[0].status == "ok"
    await resolver.lookup_mx("multi.test")  # no cache: a later lookup asks again
    assert relay.count("multi.test", "MX") == 2


# --- module-level convenience ---


async def test_module_lookup_uses_the_given_resolver(resolver: DnsResolver) -> None:
    facts = await lookup_mx("multi.test", resolver=resolver, resolve_addresses=True)
    assert facts.mx[0].addresses == ("127.0.0.6",)


async def test_module_lookup_builds_its_default_resolver_from_the_environment(
    dns_lab: DnsLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(edns.NAMESERVERS_ENV, dns_lab.nameserver)
    monkeypatch.setattr(edns, "_default_resolver", None)
    facts = await lookup_mx("acme.test")
    assert facts.mx[0].host == "mx.acme.test"
    assert edns.default_resolver().nameservers == (dns_lab.nameserver,)
    assert edns.default_resolver() is edns.default_resolver()
