"""The one engine against the Postfix lab: batches filled across domains, connections opened only
for a surplus (within politeness), answers identical to one domain at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from lab.dnslab import DnsLab
from lab.probers import lab_prober

from emailintel.dns import DnsResolver
from emailintel.models import DnsFacts, SmtpReply
from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober, SharedSessions
from emailintel.smtp.providers import ProviderRule
from emailintel.smtp.session import SmtpSession


class Watched(Prober):
    """A lab prober that records every write of RCPTs and how many sessions are open at once."""

    def __init__(self, *, mx_delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mx_delay = mx_delay  # seconds added to each RCPT write: a distant MX
        self.writes: list[list[str]] = []
        self.open_now = 0
        self.most_open = 0

    async def open_session(self, host: str, ip: str, rule: ProviderRule | None) -> SmtpSession:
        session = await super().open_session(host, ip, rule)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        transaction, rcpt_many, close = session.transaction, session.rcpt_many, session.close

        async def watched_transaction(
            sender: str, addresses: Sequence[str], **kw: Any
        ) -> tuple[list[SmtpReply], list[SmtpReply]]:
            self.writes.append(list(addresses))
            await asyncio.sleep(self.mx_delay)
            return await transaction(sender, addresses, **kw)

        async def watched_rcpt_many(addresses: Sequence[str]) -> list[SmtpReply]:
            self.writes.append(list(addresses))
            await asyncio.sleep(self.mx_delay)
            return await rcpt_many(addresses)

        async def watched_close() -> None:
            self.open_now -= 1
            await close()

        session.transaction = watched_transaction  # type: ignore[method-assign]
        session.rcpt_many = watched_rcpt_many  # type: ignore[method-assign]
        session.close = watched_close  # type: ignore[method-assign]
        return session


def watched(**overrides: Any) -> Watched:
    base = lab_prober()
    config: dict[str, Any] = {
        "identity": base.identity,
        "allow_private_mx": True,
        "politeness": PolitenessConfig.unlimited(),
        "timeouts": base.timeouts,
    }
    return Watched(**(config | overrides))


async def lookup(mail_dns: DnsLab, *domains: str) -> dict[str, DnsFacts]:
    resolver = DnsResolver([mail_dns.nameserver])
    return {d: await resolver.lookup_mx(d, resolve_addresses=True) for d in domains}


def small_domains(first: int, count: int) -> dict[str, list[str]]:
    """Bench domains on mx1.bench-mx.test, each with one real and one unknown address."""
    return {
        f"bench{i:04d}.test": [f"user01@bench{i:04d}.test", f"ghost@bench{i:04d}.test"]
        for i in range(first, first + 2 * count, 2)
    }


async def test_a_batch_is_filled_from_the_next_domains(mail_dns: DnsLab) -> None:
    batch = small_domains(102, 6)  # 12 addresses, 2 per domain, one MX
    dns = await lookup(mail_dns, *batch)
    prober = watched(max_rejections_per_connection=8)
    sharing = SharedSessions(prober, per_mx=1)
    try:
        answers = await asyncio.gather(*(sharing.probe(d, a, dns[d]) for d, a in batch.items()))
    finally:
        sharing.close()
    for (domain, addresses), facts in zip(batch.items(), answers, strict=True):
        assert facts[addresses[0]].accepted is True, domain
        assert facts[addresses[1]].mailbox_not_found is True, domain
    domains_per_write = [len({a.split("@")[1] for a in write}) for write in prober.writes]
    assert max(domains_per_write) > 1  # one write carried several domains' RCPTs
    assert prober.writes[0] == [a for d in list(batch)[:4] for a in batch[d]]  # a full batch of 8
    real = sum(len(a) for a in batch.values())
    assert len(prober.writes) < real  # far fewer round trips than addresses


async def test_one_connection_while_it_carries_the_queue(mail_dns: DnsLab) -> None:
    dns = await lookup(mail_dns, "bench0104.test")
    prober = watched(politeness=PolitenessConfig.unlimited())
    sharing = SharedSessions(prober)  # per MX: as politeness allows
    try:
        await sharing.probe("bench0104.test", ["user01@bench0104.test"], dns["bench0104.test"])
    finally:
        sharing.close()
    assert prober.sessions_opened == 1


async def test_more_connections_for_a_surplus_within_politeness(mail_dns: DnsLab) -> None:
    domains = small_domains(106, 30)  # 60 addresses on one MX, half of them unknown
    dns = await lookup(mail_dns, *domains)
    config = PolitenessConfig(
        connections_per_host=3, rcpt_per_minute_per_host=1e9, global_concurrency=64, jitter=0
    )
    # Loopback answers in well under 10 ms; parallel_from=0 treats it as the internet, and the
    # added delay per RCPT write makes it as slow as one, so the first connection is still busy
    # when the others open even on a loaded machine (a fast first connection could otherwise
    # carry the whole queue alone before a second one finished its greeting).
    prober = watched(politeness=config, max_rejections_per_connection=8, mx_delay=0.2)
    sharing = SharedSessions(prober, total=64, parallel_from=0.0)
    try:
        answers = await asyncio.gather(*(sharing.probe(d, a, dns[d]) for d, a in domains.items()))
    finally:
        sharing.close()
    assert all(len(facts) == 2 for facts in answers)
    assert 1 < prober.most_open <= 3  # a surplus opened more, politeness capped them


async def test_a_short_round_trip_keeps_one_connection(mail_dns: DnsLab) -> None:
    domains = small_domains(166, 20)  # 40 addresses on one MX
    dns = await lookup(mail_dns, *domains)
    config = PolitenessConfig(
        connections_per_host=3, rcpt_per_minute_per_host=1e9, global_concurrency=64, jitter=0
    )
    prober = watched(politeness=config, max_rejections_per_connection=8)
    sharing = SharedSessions(prober, total=64, parallel_from=3600.0)  # no MX is that far
    try:
        answers = await asyncio.gather(*(sharing.probe(d, a, dns[d]) for d, a in domains.items()))
    finally:
        sharing.close()
    assert all(len(facts) == 2 for facts in answers)
    assert prober.most_open == 1
    assert prober.sessions_opened > 1  # the error budget still made it reconnect
