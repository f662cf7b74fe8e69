"""Authorization locks: exclusivity, expiry and safe release, in-process and on a real Redis."""

from __future__ import annotations

import asyncio
import socket

import pytest
from redis.asyncio import Redis

from x402gw.locks import (
    AuthorizationLocked,
    InProcessLocks,
    InvalidLockRequest,
    LockHandle,
    LockUnavailable,
    RedisLocks,
    authorization_key,
    hold,
)

KEY = authorization_key("eip155:8453", "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 64)


class FakeClock:
    """A monotonic clock the test advances by hand, so expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _race(locks: InProcessLocks | RedisLocks, n: int) -> list[LockHandle | Exception]:
    async def one() -> LockHandle | Exception:
        try:
            return await locks.acquire(KEY, 30)
        except AuthorizationLocked as exc:
            return exc

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_authorization_key_ignores_address_case() -> None:
    upper = authorization_key("eip155:8453", "0x" + "A" * 40, "0x" + "B" * 40, "0x" + "C" * 64)
    assert upper == KEY
    assert (
        authorization_key("eip155:84532", "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 64) != KEY
    )


# --- in-process ----------------------------------------------------------------------------------


async def test_in_process_exactly_one_of_many_tasks_wins() -> None:
    results = await _race(InProcessLocks(), 50)
    winners = [r for r in results if isinstance(r, LockHandle)]
    assert len(winners) == 1
    assert all(
        isinstance(r, AuthorizationLocked) and r.key == KEY for r in results if r not in winners
    )


async def test_in_process_release_frees_the_key() -> None:
    locks = InProcessLocks()
    handle = await locks.acquire(KEY, 30)
    assert await locks.release(handle) is True
    assert await locks.release(handle) is False  # second release: not held any more
    again = await locks.acquire(KEY, 30)
    assert again.token != handle.token


async def test_in_process_expiry_and_safe_release() -> None:
    clock = FakeClock()
    locks = InProcessLocks(clock=clock)
    first = await locks.acquire(KEY, 5)
    clock.now += 4.9
    with pytest.raises(AuthorizationLocked):
        await locks.acquire(KEY, 5)
    clock.now += 0.2
    second = await locks.acquire(KEY, 5)  # the first lock expired
    assert await locks.release(first) is False  # stale holder cannot drop the new lock
    with pytest.raises(AuthorizationLocked):
        await locks.acquire(KEY, 5)
    assert await locks.release(second) is True


async def test_in_process_release_after_expiry_reports_false() -> None:
    clock = FakeClock()
    locks = InProcessLocks(clock=clock)
    handle = await locks.acquire(KEY, 1)
    clock.now += 2
    assert await locks.release(handle) is False
    await locks.acquire(KEY, 1)


@pytest.mark.parametrize(
    ("key", "ttl"),
    [
        ("", 1),
        ("k" * 1001, 1),
        (KEY, 0),
        (KEY, -1),
        (KEY, float("nan")),
        (KEY, float("inf")),
        (KEY, True),
        (KEY, 10**9),
        (KEY, "5"),
    ],
)
async def test_invalid_key_or_ttl_is_refused(key: str, ttl: float) -> None:
    with pytest.raises(InvalidLockRequest):
        await InProcessLocks().acquire(key, ttl)


async def test_hold_releases_on_exit_and_on_error() -> None:
    locks = InProcessLocks()
    async with hold(locks, KEY, 30) as handle:
        assert handle.key == KEY
        with pytest.raises(AuthorizationLocked):
            await locks.acquire(KEY, 30)
    with pytest.raises(RuntimeError):
        async with hold(locks, KEY, 30):
            raise RuntimeError("handler failed")
    assert isinstance(await locks.acquire(KEY, 30), LockHandle)


# --- Redis ---------------------------------------------------------------------------------------


async def test_redis_exactly_one_of_many_wins(clean_redis: Redis, redis_prefix: str) -> None:
    locks = RedisLocks(clean_redis, prefix=redis_prefix)
    results = await _race(locks, 50)
    winners = [r for r in results if isinstance(r, LockHandle)]
    assert len(winners) == 1
    assert sum(isinstance(r, AuthorizationLocked) for r in results) == 49
    assert await clean_redis.get(redis_prefix + KEY) == winners[0].token.encode()


async def test_redis_two_clients_exclude_each_other(clean_redis: Redis, redis_prefix: str) -> None:
    other = RedisLocks(Redis.from_url("redis://127.0.0.1:6379/0"), prefix=redis_prefix)
    try:
        mine = await RedisLocks(clean_redis, prefix=redis_prefix).acquire(KEY, 30)
        with pytest.raises(AuthorizationLocked):
            await other.acquire(KEY, 30)
        assert await other.release(mine) is True  # the token, not the client, proves ownership
        await other.acquire(KEY, 30)
    finally:
        await other.aclose()


async def test_redis_lock_sets_px_ttl(clean_redis: Redis, redis_prefix: str) -> None:
    locks = RedisLocks(clean_redis, prefix=redis_prefix)
    await locks.acquire(KEY, 30)
    pttl = await clean_redis.pttl(redis_prefix + KEY)
    assert 0 < pttl <= 30_000


async def test_redis_lock_expires_and_stale_release_is_safe(
    clean_redis: Redis, redis_prefix: str
) -> None:
    locks = RedisLocks(clean_redis, prefix=redis_prefix)
    first = await locks.acquire(KEY, 0.05)
    for _ in range(1000):  # Redis drops the key by itself once PX elapses
        if not await clean_redis.exists(redis_prefix + KEY):
            break
        await asyncio.sleep(0.01)
    second = await locks.acquire(KEY, 30)
    assert await locks.release(first) is False
    assert await clean_redis.get(redis_prefix + KEY) == second.token.encode()
    assert await locks.release(second) is True
    assert await clean_redis.exists(redis_prefix + KEY) == 0


async def test_redis_hold(clean_redis: Redis, redis_prefix: str) -> None:
    locks = RedisLocks(clean_redis, prefix=redis_prefix)
    async with hold(locks, KEY, 30):
        with pytest.raises(AuthorizationLocked):
            await locks.acquire(KEY, 30)
    assert await clean_redis.exists(redis_prefix + KEY) == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_unreachable_is_a_typed_error() -> None:
    locks = RedisLocks.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        with pytest.raises(LockUnavailable):
            await locks.acquire(KEY, 30)
        with pytest.raises(LockUnavailable):
            await locks.release(LockHandle(KEY, "token"))
    finally:
        await locks.aclose()
