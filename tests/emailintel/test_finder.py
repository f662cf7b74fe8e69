"""find() against a small real Postfix lab (finder.test, a catch-all) behind a real NSD."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab.dnslab import DnsLab
from lab.maillab import Listener, MailDomain, MailLab
from lab.mailstack import mail_stack

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError, PersonNameError
from emailintel.finder import Finder, find
from emailintel.models import Reason
from emailintel.patternstore import MemoryPatternStore, SqlitePatternStore
from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts

RARE_USERS = ("john.doe", "jane.roe", "info", "petrova-olga")
"""petrova-olga is {last}-{first}: ranked well past the first round of ten for Olga Petrova."""


@pytest.fixture(scope="module")
def finder_lab() -> Iterator[tuple[MailLab, DnsLab]]:
    lab = MailLab(
        listeners=[
            Listener("main", "mx.finder.test", 2),
            Listener("wild", "mx.wild.test", 3),
            Listener("strict", "mx.strict.test", 4, profile="strict"),
        ],
        domains=[
            MailDomain("finder.test", mx=("main",), users=RARE_USERS),
            MailDomain("wild.test", mx=("wild",), catch_all=True),
            MailDomain("strict.test", mx=("strict",), users=RARE_USERS),
            MailDomain("learn.test", mx=("main",), users=("doe.john", "roe.jane")),
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
    assert await finder.store.known("finder.test") == [("john.doe@finder.test", "John Doe")]
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
    assert len(result.candidates) == 30
    assert sum(c.probability or 0 for c in result.candidates) == pytest.approx(1.0)
    # One accept (the first candidate) and the catch-all probe: nothing more was sent.
    assert [c.status for c in result.candidates[:2]] == ["catch_all", "not_probed"]
    assert await finder.store.known("wild.test") == []


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


@pytest.mark.parametrize("domain", ["finder.test", "strict.test"])
async def test_a_rare_pattern_past_the_first_round_is_found(
    finder_lab: tuple[MailLab, DnsLab], domain: str
) -> None:
    """Ten refusals prove the domain is not catch-all, so the rest of the budget is probed over
    new sessions, within the prober's error budget (strict.test: Postfix's low error limits)."""
    finder = make_finder(finder_lab[1])
    result = await finder.find("Olga", "Petrova", domain)
    assert result.found, result.reasons
    assert result.email == f"petrova-olga@{domain}"
    assert result.pattern == "{last}-{first}"
    rank = [c.email for c in result.candidates].index(result.email) + 1
    assert rank > finder.first_round
    probed = [c for c in result.candidates if c.smtp is not None]
    assert len(probed) == rank
    assert all(c.status == "rejected" for c in probed[:-1])
    # With the old budget (ten, in one round) the same person is not found.
    short = make_finder(finder_lab[1], max_candidates=10)
    missed = await short.find("Olga", "Petrova", domain)
    assert not missed.found
    assert missed.reasons == (Reason.MAILBOX_NOT_FOUND,)
    # Ten refusals already cross one connection's error budget: the engine reconnected.
    assert short.prober.sessions_opened >= 2
    assert finder.prober.sessions_opened > short.prober.sessions_opened


async def test_no_second_round_unless_the_first_was_all_refusals(
    finder_lab: tuple[MailLab, DnsLab],
) -> None:
    """A first round cut short (here the mail server's port is dead) probes nothing more."""
    finder = make_finder(finder_lab[1], first_round=3)
    result = await finder.find_candidates(
        ["a1@finder.test", "a2@finder.test", "a3@finder.test", "a4@finder.test"]
    )
    assert [c.status for c in result.candidates] == ["rejected"] * 4
    assert finder.prober.sessions_opened == 2
    dead = Finder(
        prober=make_finder(finder_lab[1]).prober,
        resolver=DnsResolver([finder_lab[1].nameserver]),
        first_round=1,
    )
    dead.prober.port = 9  # nothing listens: the first round ends without a verdict
    gone = await dead.find("Olga", "Petrova", "finder.test")
    assert not gone.found
    assert [c.status for c in gone.candidates[:2]] == ["unknown", "not_probed"]


async def test_given_candidates_in_order_across_domains(
    finder_lab: tuple[MailLab, DnsLab],
) -> None:
    finder = make_finder(finder_lab[1])
    result = await finder.find_candidates(
        [
            "x@@bad",
            "ann@nowhere.test",
            "ann@wild.test",
            "nobody@finder.test",
            "nobody@finder.test",
            "jane.roe@finder.test",
            "john.doe@finder.test",
        ],
        name="Jane Roe",
    )
    assert result.found
    assert result.email == "jane.roe@finder.test"
    assert result.domain == "finder.test"
    assert result.pattern is None
    assert result.probability is None
    statuses = [c.status for c in result.candidates]
    assert statuses == [
        "invalid", "undeliverable", "catch_all", "rejected", "accepted", "not_probed",
    ]  # fmt: skip
    assert [d.domain for d in result.lookups] == ["nowhere.test", "wild.test", "finder.test"]
    assert await finder.store.known("finder.test") == [("jane.roe@finder.test", "Jane Roe")]
    # Only a catch-all accept: not a find, and the catch-all is reported.
    wild = await finder.find_candidates(["ann@wild.test", "bob@nowhere.test"])
    assert not wild.found
    assert wild.catch_all is True
    assert wild.reasons == (Reason.DOMAIN_NOT_FOUND, Reason.CATCH_ALL)
    nothing = await finder.find_candidates(["x@@bad"])
    assert nothing.domain is None
    assert not nothing.found
    assert nothing.lookups == ()
    with pytest.raises(ConfigError):
        await finder.find_candidates([f"u{i}@finder.test" for i in range(101)])


async def test_a_failing_store_costs_the_ranking_not_the_find(
    finder_lab: tuple[MailLab, DnsLab], tmp_path: Path
) -> None:
    finder = make_finder(finder_lab[1], store=SqlitePatternStore(tmp_path))  # a directory
    result = await finder.find("John", "Doe", "finder.test")
    assert result.found
    assert result.email == "john.doe@finder.test"


def _cli_find(dns: DnsLab, name: str, domain: str, cache: Path) -> dict[str, Any]:
    """``emailintel find --json`` in a new process, sharing the pattern cache file."""
    argv = [
        sys.executable, "-m", "emailintel", "find", name, domain, "--json",
        "--helo", "probe.verifier-lab.test", "--mail-from", "bounce@verifier-lab.test",
        "--allow-private-mx", "--nameserver", dns.nameserver, "--timeout", "5",
    ]  # fmt: skip
    env = {**os.environ, "EMAILINTEL_PATTERN_CACHE": str(cache)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode in (0, 1), done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_a_learned_pattern_ranks_first_in_a_new_process(
    finder_lab: tuple[MailLab, DnsLab], tmp_path: Path
) -> None:
    cache = tmp_path / "patterns.sqlite3"
    first = _cli_find(finder_lab[1], "John Doe", "learn.test", cache)
    assert first["found"] is True
    assert first["email"] == "doe.john@learn.test"
    assert first["pattern"] == "{last}.{first}"
    before = [c["email"] for c in first["candidates"]].index("doe.john@learn.test")
    assert before > 0  # the priors did not put it first
    second = _cli_find(finder_lab[1], "Jane Roe", "learn.test", cache)
    assert second["found"] is True
    assert second["candidates"][0]["email"] == "roe.jane@learn.test"
    assert [c["email"] for c in second["candidates"] if c["smtp"]] == ["roe.jane@learn.test"]
    # Without the cache file a new process starts from the priors again.
    fresh = _cli_find(finder_lab[1], "Jane Roe", "learn.test", tmp_path / "other.sqlite3")
    assert fresh["candidates"][0]["email"] != "roe.jane@learn.test"


def test_bad_names_and_config_raise() -> None:
    finder = Finder(prober=None, resolver=DnsResolver(["127.0.0.1:9"]))
    with pytest.raises(ConfigError):
        Finder(max_candidates=0)
    with pytest.raises(ConfigError):
        Finder(first_round=0)
    with pytest.raises(PersonNameError):
        asyncio.run(finder.find("", "", "example.org"))


async def test_memory_pattern_store_is_bounded() -> None:
    store = MemoryPatternStore(max_domains=2, per_domain=2)
    for i in range(3):
        await store.add("a.test", f"u{i}@a.test", f"U {i}")
    assert await store.known("a.test") == [("u1@a.test", "U 1"), ("u2@a.test", "U 2")]
    await store.add("b.test", "x@b.test", "X Y")
    await store.known("a.test")  # a.test is now the most recently used
    await store.add("c.test", "z@c.test", "Z Q")
    assert len(store) == 2
    assert await store.known("b.test") == []
    assert await store.known("A.TEST") != []
    with pytest.raises(ConfigError):
        MemoryPatternStore(per_domain=0)
