"""Per-MX connection slots and back-offs shared through the real Redis (127.0.0.1:6379): two
workers never hold more than the cap together, a back-off set by one holds the other, an expired
lease frees its slot, and with Redis down each worker falls back to its own slots and logs it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from emailintel.smtp.politeness import Politeness, PolitenessConfig
from emailintel.smtp.redisbuckets import RedisBuckets
from server.hostslots import RedisHostSlots
from server.services import HELO_VARIABLE, Services, configured_prober
from server.settings import Settings

HOST = "mx.shared.test"


class Stop(Exception):
    """Raised by a recording sleep, to see what a limiter would wait for."""


@pytest.fixture
def prefix(clean_redis: Redis, redis_prefix: str) -> str:
    """This test's key prefix in the real Redis; its keys are deleted afterwards."""
    return redis_prefix + "politeness:"


def _worker_slots(prefix: str) -> RedisHostSlots:
    """One worker's store, on a client (connection pool) of its own."""
    return RedisHostSlots(Redis.from_url("redis://127.0.0.1:6379"), prefix=prefix, poll=0.005)


async def test_two_workers_never_exceed_the_cap_together(prefix: str) -> None:
    stores = [_worker_slots(prefix) for _ in range(2)]
    config = PolitenessConfig(connections_per_host=3, jitter=0)
    workers = [Politeness(config, slots=store) for store in stores]
    inside = peak = 0

    async def connection(worker: Politeness) -> None:
        nonlocal inside, peak
        async with worker.session(HOST):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    try:
        await asyncio.wait_for(asyncio.gather(*(connection(workers[i % 2]) for i in range(30))), 60)
        assert peak == 3  # each worker alone would hold 3
        assert await stores[0].client.zcard(prefix + f"slots:{HOST}") == 0  # all given back
        assert [s.failures for s in stores] == [0, 0]
    finally:
        for store in stores:
            await store.client.aclose()


async def test_the_last_slot_goes_to_one_worker_only(prefix: str) -> None:
    stores = [_worker_slots(prefix) for _ in range(2)]
    try:
        waits = await asyncio.gather(
            *(stores[i % 2].acquire(HOST, f"lease{i}", 4, 30) for i in range(20))
        )
        assert sum(1 for w in waits if w == 0) == 4
        assert all(0 < w <= 0.005 for w in waits if w != 0)
    finally:
        for store in stores:
            await store.client.aclose()


async def test_a_back_off_set_by_one_worker_holds_the_other(prefix: str) -> None:
    first, second = _worker_slots(prefix), _worker_slots(prefix)
    waited: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        waited.append(seconds)
        raise Stop

    one = Politeness(PolitenessConfig(jitter=0), slots=first)
    other = Politeness(PolitenessConfig(jitter=0), slots=second, sleep=recording_sleep)
    try:
        one.backoff("MX.Shared.test", 30)
        await asyncio.gather(*one._pending)  # the store is told in a task
        assert 29 < await second.blocked_for(HOST) <= 30
        with pytest.raises(Stop):
            async with other.session(HOST):
                pytest.fail("a backed-off host gave a connection slot")
        assert len(waited) == 1
        assert 29 < waited[0] <= 30
        assert await second.client.zcard(prefix + f"slots:{HOST}") == 0
        await second.back_off(HOST, 5)  # a shorter one does not cut the longer short
        assert await second.blocked_for(HOST) > 29
    finally:
        await first.client.aclose()
        await second.client.aclose()


async def test_an_expired_lease_frees_its_slot(prefix: str) -> None:
    """A worker that dies stops renewing: its slot is free once the lease runs out."""
    dead, alive = _worker_slots(prefix), _worker_slots(prefix)
    try:
        assert await dead.acquire(HOST, "dead-worker", 1, 0.2) == 0
        assert await alive.acquire(HOST, "alive-worker", 1, 30) > 0
        assert await dead.renew(HOST, "dead-worker", 0.2)
        await asyncio.sleep(0.3)  # no renewal: the lease expires
        assert await alive.acquire(HOST, "alive-worker", 1, 30) == 0
        assert not await dead.renew(HOST, "dead-worker", 0.2)  # lost, not revived
        assert await alive.client.zrange(prefix + f"slots:{HOST}", 0, -1) == [b"alive-worker"]
        assert 0 < await alive.client.pttl(prefix + f"slots:{HOST}") <= 31_000  # idle keys go
    finally:
        await dead.client.aclose()
        await alive.client.aclose()


async def test_a_session_renews_its_lease_while_it_lasts(prefix: str) -> None:
    store = _worker_slots(prefix)
    limiter = Politeness(PolitenessConfig(jitter=0), slots=store, lease_ttl=0.3)
    try:
        async with limiter.session(HOST):
            await asyncio.sleep(0.6)  # two lease lifetimes: renewed every 0.1 s
            assert await store.client.zcard(prefix + f"slots:{HOST}") == 1
        assert await store.client.zcard(prefix + f"slots:{HOST}") == 0
    finally:
        await store.client.aclose()


async def test_redis_down_falls_back_to_this_workers_slots(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisHostSlots(Redis.from_url("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    try:
        with caplog.at_level(logging.WARNING, logger="server.hostslots"):
            assert await store.acquire(HOST, "a", 2, 30) == 0
            assert await store.acquire(HOST, "b", 2, 30) == 0
            assert await store.acquire(HOST, "c", 2, 30) > 0  # this worker's own cap still holds
            assert await store.renew(HOST, "a", 30)
            await store.release(HOST, "a")
            assert await store.acquire(HOST, "c", 2, 30) == 0
            await store.back_off(HOST, 10)
            assert 9 < await store.blocked_for(HOST) <= 10
            limiter = Politeness(PolitenessConfig(jitter=0, backoff=0), slots=store)
            async with limiter.session("other.test"):
                pass
    finally:
        await store.client.aclose()
    assert store.failures >= 5
    assert "politeness store failed" in caplog.text


async def test_services_close_the_shared_politeness_client(settings: Settings) -> None:
    """The prober built for a worker with Redis shares one client; closing the services closes it
    (no connection left open at shutdown)."""
    settings = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379"})
    env = {HELO_VARIABLE: "probe.bavlio.test", "EMAILINTEL_MAIL_FROM": "probe@bavlio.test"}
    prober = configured_prober(settings=settings, env=env)
    assert prober is not None
    store = prober.politeness.store
    assert isinstance(store, RedisBuckets)
    await store.client.ping()
    pool = store.client.connection_pool
    assert any(c.is_connected for c in pool._available_connections)
    services = Services.build(settings, prober=prober)
    await services.close()
    assert not any(c.is_connected for c in pool._available_connections)
