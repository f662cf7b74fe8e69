"""Greylisting: the retry delay as a table and properties, the one retry loop, and a lab whose
postgrey names its delay ("please try again in N seconds")."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lab.dnslab import DnsLab
from lab.maillab import Listener, MailDomain, MailLab
from lab.mailstack import mail_stack
from lab.probers import lab_prober

from emailintel.dns import DnsResolver
from emailintel.models import SmtpFacts, SmtpReply, Verdict
from emailintel.smtp.greylist import (
    HINT_SLACK,
    hint_of,
    retry_delay,
    retry_greylisted,
)
from emailintel.verify import RetryWait, Validator, verify_many

SCHEDULE = (60.0, 300.0, 900.0)

# (attempt, schedule, hints, remaining, cap, expected delay or None)
# fmt: off
DELAYS: list[tuple[int, tuple[float, ...], list[float | None], float | None, float, float | None]] = [
    (0, SCHEDULE, [None], None, 3600.0, 60.0),                # no hint: the schedule
    (1, SCHEDULE, [None, None], None, 3600.0, 300.0),
    (3, SCHEDULE, [15.0], None, 3600.0, None),                # schedule used up: no more retries
    (0, (), [15.0], None, 3600.0, None),                      # no schedule: never retried
    (0, SCHEDULE, [15.0], None, 3600.0, 15.0 + HINT_SLACK),   # the server's hint wins
    (2, SCHEDULE, [15.0], None, 3600.0, 15.0 + HINT_SLACK),   # ... on every attempt
    (0, SCHEDULE, [15.0, None, 300.0], None, 3600.0, 301.0),  # the longest hint covers everyone
    (0, SCHEDULE, [0.0], None, 3600.0, HINT_SLACK),           # "0 seconds": just after
    (0, SCHEDULE, [86_400.0], None, 3600.0, 3600.0),          # a silly hint is capped
    (0, (7200.0,), [None], None, 3600.0, 3600.0),             # so is a silly schedule
    (0, SCHEDULE, [15.0], 10.0, 3600.0, None),                # would pass the deadline: give up
    (0, SCHEDULE, [None], 60.0, 3600.0, 60.0),                # exactly at the deadline is fine
    (0, SCHEDULE, [None], -1.0, 3600.0, None),                # deadline already gone
]
# fmt: on


@pytest.mark.parametrize(("attempt", "schedule", "hints", "remaining", "cap", "expected"), DELAYS)
def test_retry_delay_table(
    attempt: int,
    schedule: tuple[float, ...],
    hints: list[float | None],
    remaining: float | None,
    cap: float,
    expected: float | None,
) -> None:
    got = retry_delay(attempt, schedule, hints, remaining=remaining, cap=cap)
    assert got == expected


def test_negative_attempt_raises() -> None:
    with pytest.raises(ValueError, match="attempt"):
        retry_delay(-1, SCHEDULE, [])


_delays = st.floats(min_value=0.001, max_value=1e6, allow_nan=False)


@given(
    attempt=st.integers(min_value=0, max_value=6),
    schedule=st.lists(_delays, max_size=5),
    hints=st.lists(st.none() | st.floats(min_value=0, max_value=86_400.0), max_size=6),
    remaining=st.none() | st.floats(min_value=-10, max_value=1e6, allow_nan=False),
    cap=st.floats(min_value=1.0, max_value=1e5),
)
def test_retry_delay_is_bounded(
    attempt: int,
    schedule: list[float],
    hints: list[float | None],
    remaining: float | None,
    cap: float,
) -> None:
    delay = retry_delay(attempt, schedule, hints, remaining=remaining, cap=cap)
    if attempt >= len(schedule):
        assert delay is None
    if delay is None:
        return
    assert 0 <= delay <= cap
    assert remaining is None or delay <= remaining
    named = [h for h in hints if h is not None]
    if named:
        assert delay == min(max(named) + HINT_SLACK, cap)
    else:
        assert delay == min(schedule[attempt], cap)


def greylisted(message: str) -> SmtpFacts:
    reply = SmtpReply(stage="rcpt", code=451, message=message)
    return SmtpFacts(checked=True, greylisted=True, retry_after=1.0, reply=reply)


ACCEPTED = SmtpFacts(checked=True, accepted=True)
NOT_FOUND = SmtpFacts(checked=True, accepted=False, mailbox_not_found=True)


def test_hint_of_reads_the_reply() -> None:
    assert hint_of(greylisted("4.7.1 Greylisted, please try again in 42 seconds")) == 42.0
    assert hint_of(greylisted("4.2.0 Greylisted, see http://postgrey.example/help.html")) is None
    assert hint_of(SmtpFacts(checked=True, greylisted=True)) is None


class Recorder:
    """The loop's callbacks, recorded; ``answers`` are what each re-probe returns, in turn."""

    def __init__(self, answers: list[Mapping[str, SmtpFacts]]) -> None:
        self.answers = list(answers)
        self.events: list[tuple[str, object]] = []

    async def probe(self, addresses: list[str]) -> Mapping[str, SmtpFacts]:
        self.events.append(("probe", sorted(addresses)))
        return self.answers.pop(0)

    async def sleep(self, delay: float) -> None:
        self.events.append(("sleep", delay))

    def final(self, addresses: list[str]) -> None:
        self.events.append(("final", sorted(addresses)))

    def wait(self, waiting: int, delay: float | None) -> None:
        self.events.append(("wait", (waiting, delay)))


async def test_loop_retries_at_the_hint_and_reports_finals_first() -> None:
    facts = {
        "a@x.test": greylisted("4.7.1 Greylisted, please try again in 20 seconds"),
        "b@x.test": NOT_FOUND,
    }
    rec = Recorder([{"a@x.test": ACCEPTED}])
    out = await retry_greylisted(
        facts, rec.probe, SCHEDULE, on_final=rec.final, on_wait=rec.wait, sleep=rec.sleep
    )
    assert out["a@x.test"] is ACCEPTED
    assert rec.events == [
        ("final", ["b@x.test"]),
        ("wait", (1, 20.0 + HINT_SLACK)),
        ("sleep", 20.0 + HINT_SLACK),
        ("probe", ["a@x.test"]),
        ("wait", (0, None)),
        ("final", ["a@x.test"]),
    ]


async def test_loop_follows_the_schedule_without_a_hint_and_stops_when_it_runs_out() -> None:
    still = greylisted("4.2.0 Greylisted, see http://postgrey.example/help.html")
    rec = Recorder([{"a@x.test": still}, {"a@x.test": still}])
    out = await retry_greylisted(
        {"a@x.test": still}, rec.probe, (5.0, 7.0), on_wait=rec.wait, sleep=rec.sleep
    )
    assert out["a@x.test"].greylisted is True
    sleeps = [value for kind, value in rec.events if kind == "sleep"]
    assert sleeps == [5.0, 7.0]
    assert rec.events[-1] == ("wait", (0, None))


async def test_loop_never_waits_past_the_deadline() -> None:
    facts = {"a@x.test": greylisted("Greylisted, please try again in 300 seconds")}
    rec = Recorder([])
    now = 1000.0
    await retry_greylisted(
        facts, rec.probe, SCHEDULE, deadline=now + 100, on_wait=rec.wait, sleep=rec.sleep,
        clock=lambda: now,
    )  # fmt: skip
    assert rec.events == []  # 301 s > 100 s left: no wait, no probe, no announcement


async def test_loop_without_greylisting_reports_everything_once() -> None:
    rec = Recorder([])
    facts = {"a@x.test": ACCEPTED, "b@x.test": NOT_FOUND}
    await retry_greylisted(facts, rec.probe, SCHEDULE, on_final=rec.final, sleep=rec.sleep)
    assert rec.events == [("final", ["a@x.test", "b@x.test"])]


# --- the lab: postgrey that says how long to wait -------------------------------------------------

HINT_DELAY = 3  # postgrey's --delay: the hint it gives is at most this many seconds


@pytest.fixture(scope="module")
def hinting_lab() -> Iterator[tuple[MailLab, DnsLab]]:
    """A Postfix + postgrey whose greylisting reply names the seconds left, and NSD for it."""
    lab = MailLab(
        listeners=[Listener("greylist", "mx.hinted.test", 4)],
        domains=[MailDomain("hinted.test", mx=("greylist",), greylist=True)],
        greylist_delay=HINT_DELAY,
        greylist_text="Greylisted, please try again in %s seconds",
        tls=False,
    )
    with mail_stack(lab) as started:
        yield started


@pytest.mark.lab
async def test_greylisted_address_verifies_after_the_retry_at_the_hint(
    hinting_lab: tuple[MailLab, DnsLab],
) -> None:
    lab, dns = hinting_lab
    # The schedule alone would wait ten minutes: the result comes back only through the hint.
    prober = lab_prober(source_address=lab.fresh_source(), retry_schedule=(600.0, 600.0))
    validator = Validator(resolver=DnsResolver([dns.nameserver]))
    waits: list[RetryWait] = []
    before = time.time()
    results = {
        r.address: r
        async for r in verify_many(
            ["info@hinted.test", "nobody.here@hinted.test"],
            prober=prober,
            validator=validator,
            on_retry_wait=waits.append,
        )
    }
    assert results["info@hinted.test"].verdict is Verdict.VALID
    assert results["nobody.here@hinted.test"].verdict is Verdict.INVALID
    start, end = waits
    assert start.waiting == 1
    assert start.retry_at is not None
    assert start.retry_at <= before + HINT_DELAY + HINT_SLACK + 60  # the hint, not 600 s
    assert (end.waiting, end.retry_at) == (0, None)
    assert prober.sessions_opened == 2


@pytest.mark.lab
async def test_probe_with_retries_waits_at_the_hint(hinting_lab: tuple[MailLab, DnsLab]) -> None:
    lab, dns = hinting_lab
    resolver = DnsResolver([dns.nameserver])
    facts = await resolver.lookup_mx("hinted.test", resolve_addresses=True)
    prober = lab_prober(source_address=lab.fresh_source(), retry_schedule=(600.0,))
    first = await prober.probe("hinted.test", ["sales@hinted.test"], facts)
    hint = hint_of(first["sales@hinted.test"])
    assert first["sales@hinted.test"].greylisted is True
    assert hint is not None
    assert 0 < hint <= HINT_DELAY
    answer = await prober.probe_with_retries("hinted.test", ["jane.doe@hinted.test"], facts)
    assert answer["jane.doe@hinted.test"].accepted is True
