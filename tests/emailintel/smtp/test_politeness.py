"""Token-bucket arithmetic (pure, property-tested) and the asyncio politeness limiter."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.errors import ConfigError
from emailintel.smtp.politeness import Politeness, PolitenessConfig, TokenBucket

rates = st.floats(min_value=0.01, max_value=1000, allow_nan=False)
capacities = st.floats(min_value=1, max_value=100, allow_nan=False)
steps = st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=40)


@given(rates, capacities, steps)
def test_tokens_stay_within_bounds(rate: float, capacity: float, gaps: list[float]) -> None:
    bucket = TokenBucket(rate=rate, capacity=capacity)
    now = 0.0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        assert wait >= 0
        assert -1e-9 <= bucket.tokens <= capacity + 1e-9


@given(rates, capacities, st.floats(min_value=0.1, max_value=10))
def test_grants_never_exceed_capacity_plus_rate_times_time(
    rate: float, capacity: float, horizon: float
) -> None:
    bucket = TokenBucket(rate=rate, capacity=capacity)
    granted, now = 0, 0.0
    while now <= horizon and granted < 2_000:
        wait = bucket.take(now)
        if wait == 0:
            granted += 1
        else:
            now += wait
    assert granted <= capacity + rate * horizon + 1


@given(rates, capacities)
def test_wait_is_exactly_enough(rate: float, capacity: float) -> None:
    bucket = TokenBucket(rate=rate, capacity=capacity)
    while bucket.take(0.0) == 0:
        pass
    wait = bucket.take(0.0)
    assert wait > 0
    assert bucket.take(wait * (1 + 1e-9) + 1e-12) == 0


@given(st.floats(min_value=0.1, max_value=100))
def test_backoff_blocks_until_it_ends(seconds: float) -> None:
    bucket = TokenBucket(rate=100, capacity=10)
    bucket.block_until(seconds)
    assert bucket.take(0.0) == pytest.approx(seconds)
    assert bucket.take(seconds) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0, "capacity": 1}, {"rate": 1, "capacity": 0.5}, {"rate": -1, "capacity": 5}],
)
def test_bad_bucket(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(**kwargs)


def test_taking_more_than_capacity_is_refused() -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate=1, capacity=2).take(0.0, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connections_per_host": 0},
        {"global_concurrency": 0},
        {"rcpt_per_minute_per_host": 0},
        {"sessions_per_minute_per_provider": -1},
        {"jitter": -0.1},
        {"backoff": -1},
    ],
)
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        PolitenessConfig(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_safe_for_the_internet() -> None:
    config = PolitenessConfig()
    assert config.connections_per_host <= 2
    assert config.rcpt_per_minute_per_host <= 60


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_connections_per_host_are_capped() -> None:
    limiter = Politeness(PolitenessConfig(connections_per_host=2, jitter=0))
    inside = peak = 0

    async def one() -> None:
        nonlocal inside, peak
        async with limiter.session("mx.a.test"):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(6)))
    assert peak == 2


async def test_provider_connection_limit_lowers_the_host_cap() -> None:
    limiter = Politeness(PolitenessConfig(connections_per_host=5, jitter=0))
    inside = peak = 0

    async def one() -> None:
        nonlocal inside, peak
        async with limiter.session(
            "mx.b.test", provider="p", provider_per_minute=1e6, provider_connections=1
        ):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(3)))
    assert peak == 1


async def test_rcpt_tokens_and_backoff_use_the_clock() -> None:
    clock = FakeClock()
    limiter = Politeness(PolitenessConfig(rcpt_per_minute_per_host=600, jitter=0), clock=clock)
    for _ in range(10):  # the bucket starts full (capacity 10)
        await asyncio.wait_for(limiter.rcpt("mx.c.test"), 1)
    waiter = asyncio.ensure_future(limiter.rcpt("mx.c.test"))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    clock.now += 0.1  # one token at 10/s
    await asyncio.wait_for(waiter, 1)
    limiter.backoff("mx.c.test", 30)
    blocked = asyncio.ensure_future(limiter.rcpt("mx.c.test"))
    await asyncio.sleep(0.02)
    assert not blocked.done()
    blocked.cancel()
