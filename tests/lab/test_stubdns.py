"""The stub resolver answers its domains exactly as the NSD lab does, and needs no DNS server."""

from __future__ import annotations

import pytest

from emailintel.dns import DnsResolver
from emailintel.errors import AddressError
from lab.dnslab import DnsLab
from lab.stubdns import STUB_DOMAINS, StubResolver

NAMES = [*STUB_DOMAINS, "absent.test", "example.com"]


@pytest.mark.parametrize("resolve_addresses", [False, True])
@pytest.mark.parametrize("domain", NAMES)
async def test_stub_matches_the_lab(dns_lab: DnsLab, domain: str, resolve_addresses: bool) -> None:
    real = await DnsResolver([dns_lab.nameserver], timeout=2.0).lookup_mx(
        domain, resolve_addresses=resolve_addresses
    )
    stub = await StubResolver().lookup_mx(domain, resolve_addresses=resolve_addresses)
    assert stub.model_dump(exclude={"elapsed_ms"}) == real.model_dump(exclude={"elapsed_ms"})


@pytest.mark.parametrize("host", ["mx.acme.test", "mx2.multi.test", "nope.acme.test"])
async def test_stub_hosts_match_the_lab(dns_lab: DnsLab, host: str) -> None:
    real = await DnsResolver([dns_lab.nameserver], timeout=2.0).resolve_host(host)
    assert await StubResolver().resolve_host(host) == real


async def test_stub_answers_from_its_table_and_records_queries() -> None:
    stub = StubResolver({})
    assert (await stub.lookup_mx("ACME.test")).status == "nxdomain"
    assert await stub.resolve_host("mx.acme.test") == ()
    assert stub.queries == ["acme.test", "mx.acme.test"]


async def test_stub_rejects_bad_names_like_the_resolver() -> None:
    with pytest.raises(AddressError):
        await StubResolver().lookup_mx("bad..name")
