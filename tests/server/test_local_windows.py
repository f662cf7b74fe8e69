"""The keyed API's in-memory rate limiter (server.ratelimit.LocalWindows) counts exactly like
``limits``' sliding-window counter on its memory storage, which it replaces on the hot path."""

from __future__ import annotations

import asyncio
import math
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from server.ratelimit import KeyRateLimiter, LocalWindows

BASE = 1_765_000_000.0
LIMITS = ("3/minute", "5/10 seconds", "2/second", "7/hour")

steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=90.0, allow_nan=False),  # seconds since the last hit
        st.integers(min_value=0, max_value=2),  # which identity
        st.sampled_from(LIMITS),
        st.integers(min_value=1, max_value=3),  # cost
    ),
    min_size=1,
    max_size=40,
)


async def _reference(
    script: list[tuple[float, int, str, int]],
) -> list[tuple[bool, int, float]]:
    """What ``limits`` answers for each hit, at the clock the script sets."""
    limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
    now = BASE
    out = []
    for delay, who, limit, cost in script:
        now += delay
        item = parse(limit)
        with mock.patch("time.time", return_value=now):
            allowed = await limiter.hit(item, "bavlio-keyed", str(who), cost=cost)
            stats = await limiter.get_window_stats(item, "bavlio-keyed", str(who))
        out.append((allowed, max(stats.remaining, 0), max(stats.reset_time - now, 0.0)))
    return out


@settings(max_examples=150, deadline=None)
@given(steps)
def test_counts_like_limits_sliding_window(script: list[tuple[float, int, str, int]]) -> None:
    expected = asyncio.run(_reference(script))
    windows = LocalWindows()
    now = BASE
    for (delay, who, limit, cost), (allowed, remaining, reset) in zip(
        script, expected, strict=True
    ):
        now += delay
        item = parse(limit)
        got = windows.hit((limit, str(who)), item.amount, item.get_expiry(), now, cost)
        assert got[:2] == (allowed, remaining)
        assert math.isclose(got[2], reset, abs_tol=1e-6)


def test_old_windows_are_swept() -> None:
    windows = LocalWindows()
    windows.sweep_every = 10
    for i in range(9):
        windows.hit(("1/minute", f"id-{i}"), 1, 60, BASE)
    assert len(windows) == 9
    windows.hit(("1/minute", "late"), 1, 60, BASE + 125)  # the tenth hit sweeps: 2 windows on
    assert len(windows) == 1
    # a window still reached by the sliding window is kept
    windows.hit(("1/minute", "late"), 1, 60, BASE + 185)
    for i in range(9):
        windows.hit(("1/minute", f"x-{i}"), 1, 60, BASE + 186)
    assert ("1/minute", "late") in windows._counts


async def test_key_limiter_memory_mode_refuses_after_the_limit() -> None:
    limiter = KeyRateLimiter()
    quotas = [await limiter.hit("key:a", "3/minute") for _ in range(4)]
    assert all(q is not None for q in quotas)
    assert [(q.allowed, q.remaining) for q in quotas if q] == [
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
    ]
    refused = quotas[3]
    assert refused is not None
    assert 0 < refused.reset_after <= 60
    assert int(refused.headers()["Retry-After"]) >= 1
    other = await limiter.hit("key:b", "3/minute")
    assert other is not None
    assert other.allowed


async def test_key_limiter_redis_down_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    limiter = KeyRateLimiter("redis://127.0.0.1:1/0")
    assert await limiter.hit("key:a", "3/minute") is None
    assert "rate limit store failed" in caplog.text
