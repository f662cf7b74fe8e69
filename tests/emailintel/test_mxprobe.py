"""probe_domain(): the one "look up MX, then probe" step, against an in-process MX (no daemon).

DNS comes from the stub resolver (fake.test's MX is 127.0.0.1); the MX is the aiosmtpd fake,
whose port the lab prober is told.
"""

from __future__ import annotations

import asyncio

import pytest
from lab.fakesmtp import Behaviour, fake_smtp
from lab.probers import lab_prober
from lab.stubdns import StubResolver

import emailintel
from emailintel.errors import AddressError, ConfigError
from emailintel.models import DnsFacts, MxRecord
from emailintel.mxprobe import DomainProbe, probe_domain

FAKE = DnsFacts(
    domain="fake.test",
    status="ok",
    mx=(MxRecord(preference=10, host="mx.fake.test", addresses=("127.0.0.1",)),),
)
KNOWN = frozenset({"ann@fake.test", "bob@fake.test"})


def resolver() -> StubResolver:
    return StubResolver(
        {"fake.test": FAKE, "nullmx.test": DnsFacts(domain="nullmx.test", status="null_mx")}
    )


async def test_looks_up_then_probes_every_address() -> None:
    behaviour = Behaviour(known_users=KNOWN)
    with fake_smtp(behaviour) as fake:
        prober = lab_prober(port=fake.port)
        dns, facts = await probe_domain(
            "fake.test", ["ann@fake.test", "zed@fake.test"], resolver=resolver(), prober=prober
        )
    assert dns == FAKE
    assert facts["ann@fake.test"].accepted is True
    assert facts["zed@fake.test"].mailbox_not_found is True
    assert behaviour.received[:2] == ["ann@fake.test", "zed@fake.test"]
    assert prober.sessions_opened == 1


@pytest.mark.parametrize("domain", ["nullmx.test", "nowhere.test"])
async def test_no_route_for_mail_is_never_probed(domain: str) -> None:
    prober = lab_prober()
    answer = await probe_domain(domain, [f"ann@{domain}"], resolver=resolver(), prober=prober)
    assert answer.dns.status in ("null_mx", "nxdomain")
    assert answer.facts == {}
    assert prober.sessions_opened == 0


async def test_probe_off_only_looks_up() -> None:
    prober = lab_prober()
    stub = resolver()
    answer = await probe_domain(
        "fake.test", ["ann@fake.test"], resolver=stub, prober=prober, probe=False
    )
    assert answer == DomainProbe(FAKE, {})
    assert stub.queries == ["fake.test"]
    assert prober.sessions_opened == 0


async def test_stop_on_accept_probes_no_further() -> None:
    behaviour = Behaviour(known_users=KNOWN)
    with fake_smtp(behaviour) as fake:
        prober = lab_prober(port=fake.port)
        _, facts = await probe_domain(
            "fake.test",
            ["zed@fake.test", "bob@fake.test", "ann@fake.test"],
            resolver=resolver(),
            prober=prober,
            stop_on_accept=True,
        )
    assert set(facts) == {"zed@fake.test", "bob@fake.test"}
    assert behaviour.received[:2] == ["zed@fake.test", "bob@fake.test"]
    assert "ann@fake.test" not in behaviour.received


async def test_lookup_runs_under_the_gate_and_releases_it() -> None:
    gate = asyncio.Semaphore(1)
    held: list[bool] = []

    class Watching(StubResolver):
        async def lookup_mx(self, domain: str, *, resolve_addresses: bool = False) -> DnsFacts:
            held.append(gate.locked())
            return await super().lookup_mx(domain, resolve_addresses=resolve_addresses)

    stub = Watching({"fake.test": FAKE})
    await probe_domain(
        "fake.test", ["ann@fake.test"], resolver=stub, prober=lab_prober(), probe=False,
        lookup_gate=gate,
    )  # fmt: skip
    assert held == [True]
    assert not gate.locked()


async def test_unsendable_address_raises_before_connecting() -> None:
    prober = lab_prober()
    with pytest.raises(AddressError):
        await probe_domain("fake.test", ['"a>b"@fake.test'], resolver=resolver(), prober=prober)
    assert prober.sessions_opened == 0


async def test_impersonating_identity_raises() -> None:
    prober = lab_prober(helo="mx.fake.test", mail_from="bounce@fake.test")
    with pytest.raises(ConfigError):
        await probe_domain("fake.test", ["ann@fake.test"], resolver=resolver(), prober=prober)
    assert prober.sessions_opened == 0


def test_exported_lazily_from_the_package() -> None:
    assert emailintel.probe_domain is probe_domain
    assert emailintel.DomainProbe is DomainProbe
