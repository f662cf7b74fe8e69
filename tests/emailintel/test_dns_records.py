"""TXT and CNAME lookups: joined strings, CNAME targets, NXDOMAIN / no data / timeout kept apart,
and bounded answers (a hostile zone cannot make an answer grow without limit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab.dnslab import BlackHoleDns, DnsLab

from emailintel.dns import MAX_RECORD_CHARS, MAX_RECORDS, DnsResolver
from emailintel.errors import AddressError

pytestmark = pytest.mark.lab

LONG = "p=" + "A" * 600
ZONES = {
    "txt.test": [
        ("@", "TXT", '"v=spf1 -all"'),
        ("@", "TXT", '"other"'),
        ("key._domainkey", "TXT", " ".join(f'"{LONG[i : i + 200]}"' for i in range(0, 602, 200))),
        ("alias", "CNAME", "Target.Example.test."),
        ("onlya", "A", "127.0.0.9"),
        ("bin", "TXT", '"caf\\195\\169 \\255"'),
        ("huge", "TXT", " ".join(['"' + "x" * 250 + '"'] * 20)),
        *[("many", "TXT", f'"record {i}"') for i in range(MAX_RECORDS + 5)],
    ]
}


@pytest.fixture(scope="module")
def txt_lab() -> Iterator[DnsLab]:
    """NSD serving TXT and CNAME records of every shape."""
    with DnsLab(ZONES) as lab:
        yield lab


@pytest.fixture
def resolver(txt_lab: DnsLab) -> DnsResolver:
    return DnsResolver([txt_lab.nameserver], timeout=2.0)


async def test_txt_records_with_joined_strings(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_txt("TXT.test.")
    assert (facts.name, facts.rdtype, facts.status) == ("txt.test", "TXT", "ok")
    assert sorted(facts.values) == ["other", "v=spf1 -all"]
    key = await resolver.lookup_txt("key._domainkey.txt.test")
    assert key.values == (LONG,)
    assert not key.truncated
    decoded = await resolver.lookup_txt("bin.txt.test")
    assert decoded.values == ("café \ufffd",)


async def test_cname_targets(resolver: DnsResolver) -> None:
    facts = await resolver.lookup_cname("alias.txt.test")
    assert (facts.rdtype, facts.status, facts.values) == ("CNAME", "ok", ("target.example.test",))
    assert (await resolver.lookup_cname("onlya.txt.test")).status == "nodata"


async def test_absent_names(resolver: DnsResolver) -> None:
    assert (await resolver.lookup_txt("nothing.txt.test")).status == "nxdomain"
    assert (await resolver.lookup_txt("onlya.txt.test")).status == "nodata"
    assert (await resolver.lookup_txt("outside.example")).status == "nxdomain"


async def test_answers_are_bounded(resolver: DnsResolver) -> None:
    many = await resolver.lookup_txt("many.txt.test")
    assert len(many.values) == MAX_RECORDS
    assert many.truncated
    huge = await resolver.lookup_txt("huge.txt.test")
    assert len(huge.values[0]) == MAX_RECORD_CHARS
    assert huge.truncated


async def test_timeout_and_bad_names() -> None:
    with BlackHoleDns() as hole:
        resolver = DnsResolver([hole.nameserver], timeout=0.2)
        facts = await resolver.lookup_txt("acme.test")
        assert facts.status == "timeout"
        assert facts.error is not None
    with pytest.raises(AddressError):
        await DnsResolver(["127.0.0.1:9"], timeout=0.1).lookup_txt("bad name")
