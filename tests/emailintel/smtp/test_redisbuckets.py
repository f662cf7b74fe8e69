"""Shared politeness buckets: several probers (workers) on one store keep one MX's rate together.

Redis is the real server at 127.0.0.1:6379 (the ``redis_client`` fixture marks these lab);
time is a fake clock every sharer passes, so counts are exact and nothing waits on real time.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from lab.dnslab import DnsLab
from lab.fakesmtp import Behaviour, fake_smtp
from lab.probers import lab_prober
from redis.asyncio import Redis

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError
from emailintel.smtp.politeness import BucketStore, MemoryBuckets, Politeness, PolitenessConfig
from emailintel.smtp.redisbuckets import RedisBuckets
from emailintel.smtp.session import Timeouts
from emailintel.verify import Validator, verify_many


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Waiting moves the shared clock on (no real time passes)."""
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


class Counting:
    """A store that records the clock at every token it grants (the decisions, counted)."""

    def __init__(self, inner: BucketStore, clock: FakeClock) -> None:
        self.inner = inner
        self.clock = clock
        self.granted: list[tuple[str, float]] = []

    async def take(self, key: str, rate: float, capacity: float) -> float:
        delay = await self.inner.take(key, rate, capacity)
        if delay <= 0:
            self.granted.append((key, self.clock()))
        return delay


def assert_within_rate(times: list[float], rate: float, capacity: float) -> None:
    """By every grant's time t, no more than capacity + rate * t tokens were granted."""
    for count, t in enumerate(sorted(times), start=1):
        assert count <= capacity + rate * t + 1e-6, (count, t)


@pytest.fixture
def prefix(clean_redis: Redis, redis_prefix: str) -> str:
    """This test's key prefix in the real Redis; its keys are deleted afterwards."""
    return redis_prefix + "politeness:"


async def test_two_limiters_on_one_memory_store_share_the_rate() -> None:
    clock = FakeClock()
    store = MemoryBuckets(clock)
    config = PolitenessConfig(rcpt_per_minute_per_host=60, jitter=0)  # 1/s, capacity 10
    first, second = (
        Politeness(config, clock=clock, store=store, sleep=clock.sleep) for _ in range(2)
    )
    granted = 0
    for limiter in (first, second) * 5:
        await asyncio.wait_for(limiter.rcpt("mx.shared.test"), 1)
        granted += 1
    assert granted == 10
    assert clock.now == 0
    await asyncio.wait_for(first.rcpt("mx.shared.test"), 5)  # the eleventh waits one token's time
    assert clock.now == pytest.approx(1.0)


async def test_backoff_still_holds_with_a_shared_store() -> None:
    clock = FakeClock()
    limiter = Politeness(
        PolitenessConfig(jitter=0), clock=clock, store=MemoryBuckets(clock), sleep=clock.sleep
    )
    limiter.backoff("mx.b.test", 30)
    await asyncio.wait_for(limiter.rcpt("mx.b.test"), 5)
    assert clock.now == pytest.approx(30.0)


async def test_two_workers_on_one_redis_never_exceed_the_capacity(
    redis_client: Redis, prefix: str
) -> None:
    clock = FakeClock()
    workers = [
        RedisBuckets(client=Redis.from_url("redis://127.0.0.1:6379"), prefix=prefix, clock=clock)
        for _ in range(2)
    ]
    try:
        delays = await asyncio.gather(
            *(workers[i % 2].take("rcpt:mx.a.test", 1.0, 5.0) for i in range(40))
        )
        assert sum(1 for d in delays if d == 0) == 5  # the two workers together: one bucket
        assert all(d == pytest.approx(1.0) for d in delays if d > 0)
        clock.now += 2.0  # two tokens earned
        later = [await w.take("rcpt:mx.a.test", 1.0, 5.0) for w in workers * 2]
        assert [d == 0 for d in later] == [True, True, False, False]
        assert workers[0].failures == workers[1].failures == 0
        assert await redis_client.ttl(prefix + "rcpt:mx.a.test") > 0  # idle buckets expire
    finally:
        for worker in workers:
            await worker.aclose()


async def test_the_redis_clock_is_used_by_default(redis_client: Redis, prefix: str) -> None:
    store = RedisBuckets(client=redis_client, prefix=prefix)
    delays = [await store.take("rcpt:mx.c.test", 1e-6, 3.0) for _ in range(5)]
    assert [d == 0 for d in delays] == [True, True, True, False, False]
    assert delays[-1] > 1e5  # a token at one per million seconds


async def test_redis_down_fails_open_to_this_workers_bucket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = RedisBuckets("redis://127.0.0.1:1/0", clock=clock)  # nothing listens on port 1
    try:
        with caplog.at_level(logging.WARNING, logger="emailintel.smtp.redisbuckets"):
            delays = [await store.take("rcpt:mx.d.test", 1.0, 2.0) for _ in range(3)]
    finally:
        await store.aclose()
    assert delays[:2] == [0.0, 0.0]
    assert delays[2] == pytest.approx(1.0)
    assert store.failures == 3
    assert "politeness store failed" in caplog.text


def test_a_redis_store_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="URL or client"):
        RedisBuckets()
    with pytest.raises(ConfigError, match="bad Redis URL"):
        RedisBuckets("http://not-redis")


async def test_two_probers_on_one_redis_keep_the_mx_rate(
    mail_dns: DnsLab, redis_client: Redis, prefix: str
) -> None:
    """Two workers each verify 15 addresses at one fake MX: RCPTs granted together stay within
    one bucket's capacity + rate * t (each alone would have sent 10 at once: 20 > 10)."""
    clock = FakeClock()
    config = PolitenessConfig(rcpt_per_minute_per_host=60, jitter=0, backoff=0)  # 1/s, cap 10
    behaviour = Behaviour()
    validator = Validator(resolver=DnsResolver([mail_dns.nameserver]))
    addresses = [[f"w{w}u{i}@fake.test" for i in range(15)] for w in range(2)]
    with fake_smtp(behaviour) as fake:
        stores = [
            Counting(RedisBuckets(client=redis_client, prefix=prefix, clock=clock), clock)
            for _ in range(2)
        ]
        probers = [
            lab_prober(
                port=fake.port,
                timeouts=Timeouts(connect=2, banner=3, command=3),
                politeness=Politeness(config, clock=clock, store=store, sleep=clock.sleep),
            )
            for store in stores
        ]

        async def run(worker: int) -> int:
            results = [
                r
                async for r in verify_many(
                    addresses[worker], prober=probers[worker], validator=validator
                )
            ]
            return len(results)

        counts = await asyncio.wait_for(asyncio.gather(run(0), run(1)), 60)
    assert counts == [15, 15]
    rcpt_grants = [t for s in stores for key, t in s.granted if key.startswith("rcpt:")]
    assert all(s.granted for s in stores)  # both workers sent
    assert len(rcpt_grants) == len(behaviour.received) >= 30  # every RCPT took a shared token
    assert_within_rate(rcpt_grants, rate=1.0, capacity=10.0)
    assert sum(1 for t in rcpt_grants if t == 0) == 10  # the burst at t=0 is the one bucket's


def test_without_the_redis_package_the_store_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="pip install redis"):
        RedisBuckets("redis://127.0.0.1:6379/0")
