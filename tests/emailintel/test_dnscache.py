"""The DNS answer cache (TTL, LRU bound) and single-flight sharing, without any network."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel._dnscache import SingleFlight, TtlCache


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 5), st.floats(-1, 10, allow_nan=False)),
        st.tuples(st.just("get"), st.integers(0, 5), st.just(0.0)),
        st.tuples(st.just("tick"), st.just(0), st.floats(0, 5, allow_nan=False)),
    ),
    max_size=60,
)


def _run(max_entries: int, ops: list[tuple[str, int, float]]) -> None:
    clock = FakeClock()
    cache: TtlCache[int, int] = TtlCache(max_entries, clock=clock)
    model: dict[int, tuple[float, int]] = {}  # key -> (expires, value) of the last put
    for step, (op, key, number) in enumerate(ops):
        if op == "put":
            cache.put(key, step, number)
            model[key] = (clock.now + number, step)
        elif op == "tick":
            clock.now += number
        else:
            got = cache.get(key)
            expires, value = model.get(key, (float("-inf"), -1))
            live = clock.now < expires
            if got is not None:
                assert live
                assert got == value
            elif max_entries >= 6:
                assert not live
        assert len(cache) <= max_entries


@given(st.integers(0, 8), _ops)
def test_cache_never_serves_stale_or_foreign_values_and_stays_bounded(
    max_entries: int, ops: list[tuple[str, int, float]]
) -> None:
    _run(max_entries, ops)


@given(_ops)
def test_cache_with_room_for_every_key_keeps_every_live_entry(
    ops: list[tuple[str, int, float]],
) -> None:
    _run(6, ops)


def test_least_recently_used_entry_is_evicted_first() -> None:
    cache: TtlCache[str, int] = TtlCache(2, clock=FakeClock())
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3, 60)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_an_expired_entry_is_evicted_before_a_live_one() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(2, clock=clock)
    cache.put("long", 1, 100)
    cache.put("short", 2, 1)
    clock.now += 2
    cache.put("new", 3, 100)
    assert (cache.get("long"), cache.get("new")) == (1, 3)


def test_zero_ttl_and_zero_capacity_cache_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(0, clock=FakeClock())
    cache.put("a", 1, 60)
    assert cache.get("a") is None
    roomy: TtlCache[str, int] = TtlCache(5, clock=FakeClock())
    roomy.put("a", 1, 60)
    roomy.put("a", 2, 0)  # a non-positive TTL also drops what was there
    assert roomy.get("a") is None


def test_clear_forgets_everything() -> None:
    cache: TtlCache[str, int] = TtlCache(5, clock=FakeClock())
    cache.put("a", 1, 60)
    cache.clear()
    assert cache.get("a") is None
    assert len(cache) == 0


def test_negative_capacity_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        TtlCache[str, int](-1)


async def test_concurrent_callers_share_one_execution() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls * 10

    waiters = [asyncio.create_task(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(flight) == 1
    release.set()
    assert await asyncio.gather(*waiters) == [10] * 5
    assert calls == 1
    assert len(flight) == 0
    assert await flight.run("k", work) == 20  # finished work is not reused


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str, str] = SingleFlight()

    async def echo(value: str) -> str:
        await asyncio.sleep(0)
        return value

    results = await asyncio.gather(
        flight.run("a", lambda: echo("a")), flight.run("b", lambda: echo("b"))
    )
    assert list(results) == ["a", "b"]


async def test_an_exception_reaches_every_waiter() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def fail() -> int:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    results = await asyncio.gather(
        flight.run("k", fail), flight.run("k", fail), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert len(flight) == 0


async def test_cancelling_one_waiter_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(flight.run("k", work))
    second = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await second == "done"
    assert first.cancelled()
