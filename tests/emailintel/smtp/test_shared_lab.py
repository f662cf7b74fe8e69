"""Shared sessions across domains on one MX, and RCPT pipelining, against the real Postfix lab."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lab.dnslab import DnsLab
from lab.maillab import MailLab
from lab.probers import HELO, SENDER, lab_prober

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError, InjectionError
from emailintel.models import DnsFacts, SmtpFacts, Verdict
from emailintel.smtp.prober import SharedSessions
from emailintel.smtp.session import SmtpSession, Timeouts
from emailintel.verify import Validator, verify_many

make_prober = lab_prober


async def lookup(mail_dns: DnsLab, *domains: str) -> dict[str, DnsFacts]:
    resolver = DnsResolver([mail_dns.nameserver])
    return {d: await resolver.lookup_mx(d, resolve_addresses=True) for d in domains}


def bench_batch(first: int, count: int, *, unknown: bool = True) -> dict[str, list[str]]:
    """Bench domains on one MX (every other one), each with real users and maybe unknown ones."""
    batch = {}
    for i in range(first, first + 2 * count, 2):
        domain = f"bench{i:04d}.test"
        users = ["user00", "user03"] + (["ghost.one", "ghost.two"] if unknown else [])
        batch[domain] = [f"{u}@{domain}" for u in users]
    return batch


def verdict_of(facts: SmtpFacts) -> tuple[bool | None, bool | None, bool | None]:
    return facts.accepted, facts.mailbox_not_found, facts.catch_all


async def test_shared_mx_batch_uses_fewer_connections_with_identical_facts(
    mail_dns: DnsLab,
) -> None:
    batch = bench_batch(2, 10) | bench_batch(42, 4, unknown=False)  # all on mx1.bench-mx.test
    dns = await lookup(mail_dns, *batch)
    alone, shared = make_prober(), make_prober()
    assert len({shared.share_key(facts) for facts in dns.values()}) == 1
    separate = {d: await alone.probe(d, addresses, dns[d]) for d, addresses in batch.items()}
    together = await shared.probe_many([(d, a, dns[d]) for d, a in batch.items()], sessions=2)
    assert set(together) == set(batch)
    for domain, addresses in batch.items():
        for address in addresses:
            assert verdict_of(together[domain][address]) == verdict_of(separate[domain][address])
            assert together[domain][address].accepted is address.split("@")[0].startswith("user")
        assert shared.cached_catch_all(domain, "mx1.bench-mx.test") is False
    assert alone.sessions_opened == len(batch)
    assert shared.sessions_opened < len(batch) // 2


async def test_verify_many_shares_sessions_and_keeps_verdicts(mail_dns: DnsLab) -> None:
    batch = bench_batch(3, 6)  # mx2.bench-mx.test
    addresses = [a for group in batch.values() for a in group]
    prober = make_prober()
    validator = Validator(resolver=DnsResolver([mail_dns.nameserver]))
    run = verify_many(addresses, prober=prober, validator=validator, concurrency=1)
    results = {r.address: r async for r in run}
    for address in addresses:
        expected = Verdict.VALID if address.startswith("user") else Verdict.INVALID
        assert results[address].verdict is expected
    assert prober.sessions_opened < len(batch)


async def test_domains_sharing_fails_over_the_per_domain_way(mail_dns: DnsLab) -> None:
    # deadmx.test's only MX refuses connections; multi.test's first MX is that dead one.
    dns = await lookup(mail_dns, "deadmx.test", "multi.test", "company.test")
    prober = make_prober()
    jobs = [
        ("deadmx.test", ["info@deadmx.test"], dns["deadmx.test"]),
        ("multi.test", ["info@multi.test", "ghost@multi.test"], dns["multi.test"]),
        ("company.test", [], dns["company.test"]),
    ]
    answers = await prober.probe_many(jobs, sessions=3)
    assert answers["deadmx.test"]["info@deadmx.test"].connect_failed is True
    assert answers["multi.test"]["info@multi.test"].accepted is True
    assert answers["multi.test"]["ghost@multi.test"].mailbox_not_found is True
    assert answers["multi.test"]["info@multi.test"].mx_host == "mx.company.test"
    assert answers["company.test"] == {}


async def test_probe_many_needs_a_session(mail_dns: DnsLab) -> None:
    with pytest.raises(ConfigError):
        await make_prober().probe_many([], sessions=0)


async def open_session(mail_lab: MailLab, listener: str, **kwargs: Any) -> SmtpSession:
    session = SmtpSession(
        mail_lab.ip(listener),
        helo=HELO,
        timeouts=Timeouts(connect=2, banner=5, command=5),
        starttls="never",
        **kwargs,
    )
    await session.open()
    return session


def wire(replies: list[Any]) -> list[tuple[str, int | None, str | None, str]]:
    return [(r.stage, r.code, r.enhanced_code, r.message) for r in replies]


async def test_pipelined_replies_match_one_at_a_time(mail_lab: MailLab) -> None:
    addresses = ["user00@bench0002.test", "ghost@bench0002.test", "user04@bench0002.test"]
    pipelined = await open_session(mail_lab, "bench1")
    sequential = await open_session(mail_lab, "bench1")
    try:
        assert pipelined.pipelining
        sequential.extensions.pop("pipelining")  # as if the server had not offered it
        first = await pipelined.transaction(SENDER, addresses)
        second = await sequential.transaction(SENDER, addresses)
        assert wire(first[0]) == wire(second[0])
        assert wire(first[1]) == wire(second[1])
        assert [r.code for r in first[1]] == [250, 550, 250]
        assert all(r.elapsed_ms is not None for r in first[1])
        again = await pipelined.transaction(SENDER, addresses[:2], reset=True)
        assert [r.stage for r in again[0]] == ["rset", "mail"]
        assert [r.code for r in again[1]] == [250, 550]
        assert wire(await pipelined.rcpt_many(addresses[2:])) == wire(first[1][2:])
    finally:
        await pipelined.close()
        await sequential.close()


async def test_pipelined_rcpts_are_answered_even_after_a_refused_mail(mail_lab: MailLab) -> None:
    session = await open_session(mail_lab, "bench1")
    try:
        await session.mail_from(SENDER)
        setup, replies = await session.transaction(SENDER, ["user00@bench0002.test"])
        assert setup[0].code == 503  # nested MAIL: the transaction was still open
        assert [r.stage for r in replies] == ["rcpt"]  # the prober drops these (MAIL refused)
    finally:
        await session.close()


async def test_pipelined_batch_recovers_from_452_mid_batch(
    mail_dns: DnsLab, mail_lab: MailLab
) -> None:
    # strict.test answers 452 to the 6th recipient of a transaction.
    dns = await lookup(mail_dns, "strict.test")
    session = await open_session(mail_lab, "strict", source_address=mail_lab.fresh_source())
    await session.close()
    assert session.pipelining  # so the 7 recipients go out as one batch
    prober = make_prober(source_address=mail_lab.fresh_source(), max_rejections_per_connection=20)
    valid = [f"{u}@strict.test" for u in ("john.smith", "jane.doe", "info", "sales", "postmaster")]
    unknown = ["ghost1@strict.test", "ghost2@strict.test"]
    facts = (await prober.probe_many([("strict.test", valid + unknown, dns["strict.test"])]))[
        "strict.test"
    ]
    assert all(facts[a].accepted for a in valid)
    assert all(facts[a].mailbox_not_found for a in unknown)
    assert all("rcpt" in facts[a].timings_ms for a in valid + unknown)
    assert prober.sessions_opened == 2


async def test_pipelined_batch_recovers_from_421_mid_batch(
    mail_dns: DnsLab, mail_lab: MailLab
) -> None:
    # strict.test closes with 421 after 4 errors; a budget of 10 lets the batch run into it.
    dns = await lookup(mail_dns, "strict.test")
    prober = make_prober(source_address=mail_lab.fresh_source(), max_rejections_per_connection=10)
    unknown = [f"ghost{i}@strict.test" for i in range(6)]
    facts = (await prober.probe_many([("strict.test", unknown, dns["strict.test"])]))["strict.test"]
    assert all(facts[a].mailbox_not_found for a in unknown)
    assert prober.sessions_opened == 2


async def test_a_bad_address_fails_its_own_domain_and_not_the_others(mail_dns: DnsLab) -> None:
    batch = bench_batch(6, 2)
    dns = await lookup(mail_dns, *batch)
    sharing = SharedSessions(make_prober(), per_mx=1)
    first, second = batch
    bad = [f"user00\r\nRSET@{first}"]
    results = await asyncio.gather(
        sharing.probe(first, bad, dns[first]),
        sharing.probe(second, batch[second], dns[second]),
        return_exceptions=True,
    )
    assert isinstance(results[0], InjectionError)
    assert isinstance(results[1], dict)
    assert results[1][f"user00@{second}"].accepted is True
    sharing.close()
