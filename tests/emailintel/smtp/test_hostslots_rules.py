"""Per-MX connection slots as expiring leases, and back-offs (pure, property-tested), and two
limiters (workers) sharing one in-process slot store."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lab.dnslab import DnsLab
from lab.fakesmtp import Behaviour, fake_smtp
from lab.probers import lab_prober

from emailintel.dns import DnsResolver
from emailintel.smtp.politeness import (
    SLOT_POLL,
    MemorySlots,
    Politeness,
    PolitenessConfig,
    SlotTable,
)
from emailintel.smtp.session import Timeouts
from emailintel.verify import Validator, verify_many

HOSTS = ("mx1.test", "mx2.test")
# (kind, host index, lease index, time step): acquire, release or renew, time moving on.
moves = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "release", "renew"]),
        st.integers(0, 1),
        st.integers(0, 7),
        st.floats(min_value=0, max_value=3, allow_nan=False),
    ),
    max_size=60,
)


@given(moves, st.integers(1, 4), st.floats(min_value=0.5, max_value=5))
def test_live_leases_never_exceed_the_limit(
    steps: list[tuple[str, int, int, float]], limit: int, ttl: float
) -> None:
    table = SlotTable()
    now = 0.0
    for kind, h, lease, gap in steps:
        now += gap
        host, name = HOSTS[h], f"l{lease}"
        if kind == "acquire":
            before = dict(table.live(host, now))
            wait = table.acquire(host, name, limit, ttl, now)
            if wait == 0:
                assert table.live(host, now)[name] == now + ttl
            else:  # refused: full, every other lease still live
                assert 0 < wait <= SLOT_POLL
                assert len(before) == limit
                assert name not in before
        elif kind == "release":
            table.release(host, name)
            assert name not in table.live(host, now)
        else:
            alive = name in table.live(host, now)
            assert table.renew(host, name, ttl, now) is alive
        for other in HOSTS:
            assert len(table.live(other, now)) <= limit
            assert all(until > now for until in table.live(other, now).values())


@given(st.integers(1, 5), st.floats(min_value=0.1, max_value=10))
def test_an_expired_lease_frees_its_slot(limit: int, ttl: float) -> None:
    table = SlotTable()
    for i in range(limit):
        assert table.acquire("mx.test", f"l{i}", limit, ttl, 0.0) == 0
    assert table.acquire("mx.test", "late", limit, ttl, 0.0) > 0
    assert table.renew("mx.test", "l0", ttl, ttl) is False  # expired: gone, not renewed
    assert table.acquire("mx.test", "late", limit, ttl, ttl) == 0


@given(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=8),
    st.floats(min_value=0, max_value=50, allow_nan=False),
)
def test_a_back_off_keeps_the_longest_and_closes_the_host(seconds: list[float], at: float) -> None:
    table = SlotTable()
    for s in seconds:
        table.back_off("mx.test", s, 0.0)
    longest = max(seconds)
    assert table.blocked_for("mx.test", at) == pytest.approx(max(0.0, longest - at))
    wait = table.acquire("mx.test", "l", 1, 10, at)
    if at < longest:
        assert wait == pytest.approx(longest - at)
        assert "l" not in table.live("mx.test", at)
    else:
        assert wait == 0
    assert table.blocked_for("mx2.test", at) == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


async def test_two_limiters_on_one_slot_store_share_the_connection_cap() -> None:
    clock = FakeClock()
    slots = MemorySlots(clock)
    config = PolitenessConfig(connections_per_host=3, jitter=0)
    workers = [Politeness(config, clock=clock, slots=slots, sleep=clock.sleep) for _ in range(2)]
    inside = peak = 0

    async def connection(worker: Politeness) -> None:
        nonlocal inside, peak
        async with worker.session("MX.Shared.test"):
            inside += 1
            peak = max(peak, inside)
            await clock.sleep(1)  # the session lasts a while (fake time)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(connection(workers[i % 2]) for i in range(12))), 10)
    assert peak == 3  # each alone would have held 3: together 6 without the shared store
    assert slots.table.live("mx.shared.test", clock.now) == {}  # every slot given back


async def test_a_back_off_by_one_limiter_holds_the_other() -> None:
    clock = FakeClock()
    slots = MemorySlots(clock)
    config = PolitenessConfig(jitter=0)
    first, second = (Politeness(config, clock=clock, slots=slots, sleep=clock.sleep) for _ in "ab")
    first.backoff("mx.b.test", 30)
    await asyncio.sleep(0)  # the store is told in a task
    assert await slots.blocked_for("mx.b.test") == 30
    async with second.session("mx.b.test"):
        assert clock.now == pytest.approx(30.0)
    clock.now = 0.0
    first.backoff("mx.c.test", 20)
    await asyncio.sleep(0)
    await asyncio.wait_for(second.rcpt("mx.c.test"), 5)  # an RCPT waits for it too
    assert clock.now == pytest.approx(20.0)


def test_a_back_off_outside_a_loop_stays_in_this_process() -> None:
    clock = FakeClock()
    limiter = Politeness(PolitenessConfig(), clock=clock, slots=MemorySlots(clock))
    limiter.backoff("mx.d.test", 10)
    assert limiter.blocked_for("mx.d.test") == 10


@pytest.mark.parametrize("shared", [True, False])
async def test_two_probers_on_one_slot_store_keep_the_mx_connection_cap(
    mail_dns: DnsLab, shared: bool
) -> None:
    """Two workers verify 12 addresses each at one slow fake MX: sharing a slot store they never
    hold more connections than one worker's cap; without it, each opens that many."""
    config = PolitenessConfig(
        connections_per_host=1, rcpt_per_minute_per_host=1e9, jitter=0, backoff=0
    )
    behaviour = Behaviour(rcpt_delay=0.05, max_recipients=2)  # slow, short transactions
    validator = Validator(resolver=DnsResolver([mail_dns.nameserver]))
    slots = MemorySlots()
    with fake_smtp(behaviour) as fake:
        probers = [
            lab_prober(
                port=fake.port,
                timeouts=Timeouts(connect=2, banner=3, command=3),
                politeness=Politeness(config, slots=slots if shared else None),
            )
            for _ in range(2)
        ]

        async def run(worker: int) -> int:
            addresses = [f"w{worker}u{i}@fake.test" for i in range(12)]
            return len(
                [
                    r
                    async for r in verify_many(
                        addresses, prober=probers[worker], validator=validator
                    )
                ]
            )

        counts = await asyncio.wait_for(asyncio.gather(run(0), run(1)), 60)
    assert counts == [12, 12]
    if shared:
        assert behaviour.peak_connections == 1
    else:  # each holds its own; the fake MX may still count a closing one as it sees the next
        assert behaviour.peak_connections >= 2
    assert slots.table.live("mx.fake.test", float("inf")) == {}
