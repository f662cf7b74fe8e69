"""find() against a small real Postfix lab (finder.test, a catch-all) behind a real NSD."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from lab.dnslab import DnsLab
from lab.maillab import Listener, MailDomain, MailLab
from lab.mailstack import mail_stack

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError, PersonNameError
from emailintel.finder import Finder, PatternStore, find
from emailintel.models import Reason
from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts


@pytest.fixture(scope="module")
def finder_lab() -> Iterator[tuple[MailLab, DnsLab]]:
    lab = MailLab(
        listeners=[Listener("main", "mx.finder.test", 2), Listener("wild", "mx.wild.test", 3)],
        domains=[
            MailDomain("finder.test", mx=("main",), users=("john.doe", "jane.roe", "info")),
            MailDomain("wild.test", mx=("wild",), catch_all=True),
        ],
        in_flow_delay="0",
    )
    with mail_stack(lab) as started:
        yield started


def make_finder(dns: DnsLab, **overrides: Any) -> Finder:
    prober = Prober(
        helo="probe.verifier-lab.test",
        mail_from="bounce@verifier-lab.test",
        allow_private_mx=True,
        politeness=PolitenessConfig.unlimited(),
        timeouts=Timeouts(connect=2, banner=5, command=5),
    )
    return Finder(prober=prober, resolver=DnsResolver([dns.nameserver]), **overrides)


async def test_finds_the_first_accepted_candidate_over_one_session(
    finder_lab: tuple[MailLab, DnsLab],
) -> None:
    finder = make_finder(finder_lab[1])
    result = await finder.find("John", "Doe", "finder.test")
    assert result.found
    assert result.email == "john.doe@finder.test"
    assert result.pattern == "{first}.{last}"
    assert result.catch_all is False
    assert result.reasons == (Reason.SMTP_ACCEPTED,)
    probed = [c for c in result.candidates if c.smtp is not None]
    # Probed in probability order; everything before the hit was refused, nothing after it sent.
    assert [c.probability for c in result.candidates] == sorted(
        (c.probability for c in result.candidates), reverse=True
    )
    assert probed[-1].email == "john.doe@finder.test"
    assert all(c.smtp is not None and c.smtp.mailbox_not_found for c in probed[:-1])
    assert result.candidates.index(probed[-1]) == len(probed) - 1
    assert finder.prober.sessions_opened == 1


async def test_confirmed_finds_teach_the_domain_pattern(
    finder_lab: tuple[MailLab, DnsLab],
) -> None:
    finder = make_finder(finder_lab[1])
    first = await finder.find("John", "Doe", "finder.test")
    assert first.found
    assert finder.store.known("finder.test") == [("john.doe@finder.test", "John Doe")]
    second = await finder.find("Jane", "Roe", "finder.test")
    assert second.candidates[0].email == "jane.roe@finder.test"
    assert second.found
    assert second.email == "jane.roe@finder.test"
    tried = [c for c in second.candidates if c.smtp is not None]
    assert len(tried) == 1


async def test_catch_all_domain_returns_ranked_candidates_not_a_find(
    finder_lab: tuple[MailLab, DnsLab],
) -> None:
    finder = make_finder(finder_lab[1])
    result = await finder.find("Ann", "Lee", "wild.test")
    assert not result.found
    assert result.email is None
    assert result.catch_all is True
    assert result.reasons == (Reason.CATCH_ALL,)
    assert len(result.candidates) == 10
    assert sum(c.probability for c in result.candidates) == pytest.approx(1.0)
    assert len(finder.store) == 0


async def test_nobody_found_when_every_candidate_is_refused(
    finder_lab: tuple[MailLab, DnsLab],
) -> None:
    finder = make_finder(finder_lab[1], max_candidates=4)
    result = await finder.find("Zed", "Zulu", "finder.test")
    assert not result.found
    assert result.reasons == (Reason.MAILBOX_NOT_FOUND,)
    assert all(c.smtp is not None and c.smtp.mailbox_not_found for c in result.candidates)


async def test_missing_domain_is_reported_without_probing(
    finder_lab: tuple[MailLab, DnsLab],
) -> None:
    finder = make_finder(finder_lab[1])
    result = await find("Ann", "Lee", "nowhere.test", finder=finder)
    assert not result.found
    assert result.reasons == (Reason.DOMAIN_NOT_FOUND,)
    assert all(c.smtp is None for c in result.candidates)
    assert finder.prober.sessions_opened == 0


def test_bad_names_and_config_raise() -> None:
    finder = Finder(prober=None, resolver=DnsResolver(["127.0.0.1:9"]))
    with pytest.raises(ConfigError):
        Finder(max_candidates=0)
    with pytest.raises(PersonNameError):
        asyncio.run(finder.find("", "", "example.org"))


def test_pattern_store_is_bounded() -> None:
    store = PatternStore(max_domains=2, per_domain=2)
    for i in range(3):
        store.add("a.test", f"u{i}@a.test", f"U {i}")
    assert store.known("a.test") == [("u1@a.test", "U 1"), ("u2@a.test", "U 2")]
    store.add("b.test", "x@b.test", "X Y")
    store.known("a.test")  # a.test is now the most recently used
    store.add("c.test", "z@c.test", "Z Q")
    assert len(store) == 2
    assert store.known("b.test") == []
    assert store.known("A.TEST") != []
    with pytest.raises(ConfigError):
        PatternStore(per_domain=0)
