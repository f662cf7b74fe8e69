"""Politeness: token buckets per MX host and per provider, a global cap, jitter and back-off.

What the prober may send is decided here, so a batch never hammers one MX. :class:`TokenBucket`
and :class:`SlotTable` are pure (time is passed in); :class:`Politeness` wraps buckets and
semaphores for asyncio. Several probers (workers) can share the buckets (:class:`BucketStore`)
and the per-MX connection slots and back-off (:class:`HostSlots`, leases that expire unless
renewed, so a worker that dies frees its slots).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from emailintel.errors import ConfigError

__all__ = [
    "BucketStore",
    "HostSlots",
    "MemoryBuckets",
    "MemorySlots",
    "Politeness",
    "PolitenessConfig",
    "SlotTable",
    "TokenBucket",
]

log = logging.getLogger("emailintel.smtp.politeness")

_EPSILON = 1e-9
SLOT_POLL = 0.1
"""Longest wait before asking a full host for a slot again (a slot is usually released early)."""
LEASE_TTL = 30.0
"""Seconds a shared connection slot lasts unless renewed (renewed every third of it)."""


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; ``take`` says how long to wait for one.

    Pure: the caller passes the clock. A bucket starts full. ``block_until`` lets a back-off
    keep the bucket closed for a while.
    """

    rate: float
    capacity: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0
    blocked_until: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.capacity >= 1:
            raise ConfigError(
                f"bucket needs rate > 0 and capacity >= 1: {self.rate}, {self.capacity}"
            )
        if self.tokens < 0:
            self.tokens = self.capacity

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last update (time never runs backwards here)."""
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float, amount: float = 1.0) -> float:
        """Take ``amount`` tokens and return 0, or take none and return the seconds to wait."""
        if amount > self.capacity:
            raise ConfigError(f"cannot take {amount} tokens from a bucket of {self.capacity}")
        self.refill(now)
        if now < self.blocked_until:
            return self.blocked_until - now
        if self.tokens + _EPSILON >= amount:  # float refills can land a hair short
            self.tokens = max(0.0, self.tokens - amount)
            return 0.0
        return (amount - self.tokens) / self.rate

    def block_until(self, until: float) -> None:
        """Refuse tokens until ``until`` (a back-off after 421 or a 4.7.x reply)."""
        self.blocked_until = max(self.blocked_until, until)


@dataclass(frozen=True, slots=True)
class PolitenessConfig:
    """Limits; the defaults are safe on the public internet (raise them for a lab or benchmark)."""

    connections_per_host: int = 2
    rcpt_per_minute_per_host: float = 60.0
    sessions_per_minute_per_provider: float | None = None  # None: the provider rule's per_minute
    global_concurrency: int = 32
    jitter: float = 0.25  # up to this many seconds of random delay before each new session
    backoff: float = 60.0  # seconds a host is left alone after 421 / 4.7.x

    def __post_init__(self) -> None:
        if self.connections_per_host < 1 or self.global_concurrency < 1:
            raise ConfigError("connection limits must be at least 1")
        if not self.rcpt_per_minute_per_host > 0:
            raise ConfigError("rcpt_per_minute_per_host must be positive")
        provider = self.sessions_per_minute_per_provider
        if provider is not None and not provider > 0:
            raise ConfigError("sessions_per_minute_per_provider must be positive")
        if self.jitter < 0 or self.backoff < 0:
            raise ConfigError("jitter and backoff must not be negative")

    @classmethod
    def unlimited(cls) -> PolitenessConfig:
        """Effectively no limits: for a loopback lab or benchmark only."""
        return cls(
            connections_per_host=64,
            rcpt_per_minute_per_host=1e9,
            sessions_per_minute_per_provider=1e9,
            global_concurrency=256,
            jitter=0.0,
            backoff=0.0,
        )


@dataclass
class SlotTable:
    """Connection slots per host as leases with an expiry, and each host's back-off. Pure: the
    caller passes the clock. The rules the shared (Redis) store runs in its script, too."""

    leases: dict[str, dict[str, float]] = field(default_factory=dict)
    blocked: dict[str, float] = field(default_factory=dict)

    def live(self, host: str, now: float) -> dict[str, float]:
        """The unexpired leases of ``host`` (expired ones are dropped)."""
        held = self.leases.setdefault(host, {})
        for lease in [lease for lease, until in held.items() if until <= now]:
            del held[lease]
        return held

    def acquire(self, host: str, lease: str, limit: int, ttl: float, now: float) -> float:
        """Take one of ``limit`` slots of ``host`` for ``ttl`` seconds (again: a renewal) and
        return 0; else take none and return the seconds to wait: the back-off left, or until the
        first lease may end (at most :data:`SLOT_POLL`)."""
        blocked = self.blocked.get(host, 0.0) - now
        if blocked > 0:
            return blocked
        held = self.live(host, now)
        if lease in held or len(held) < limit:
            held[lease] = now + ttl
            return 0.0
        return max(_EPSILON, min(min(held.values()) - now, SLOT_POLL))

    def renew(self, host: str, lease: str, ttl: float, now: float) -> bool:
        """Extend a live lease; False when it has expired (its slot may be someone else's)."""
        held = self.live(host, now)
        if lease not in held:
            return False
        held[lease] = now + ttl
        return True

    def release(self, host: str, lease: str) -> None:
        """Give a slot back (nothing when it already expired)."""
        self.leases.get(host, {}).pop(lease, None)

    def back_off(self, host: str, seconds: float, now: float) -> None:
        """Keep ``host`` closed for ``seconds`` (a longer back-off already set stays)."""
        self.blocked[host] = max(self.blocked.get(host, 0.0), now + seconds)

    def blocked_for(self, host: str, now: float) -> float:
        """Seconds ``host`` is still closed (0 if it is not)."""
        return max(0.0, self.blocked.get(host, 0.0) - now)


class HostSlots(Protocol):
    """Where per-MX connection slots and back-offs live: in this process or shared (Redis), so
    several workers together hold no more than a host's cap and all leave a host alone after
    one of them is told to back off."""

    async def acquire(self, host: str, lease: str, limit: int, ttl: float) -> float:
        """:meth:`SlotTable.acquire` (0: taken; else the seconds before asking again)."""
        ...

    async def renew(self, host: str, lease: str, ttl: float) -> bool:
        """:meth:`SlotTable.renew`."""
        ...

    async def release(self, host: str, lease: str) -> None:
        """:meth:`SlotTable.release`."""
        ...

    async def back_off(self, host: str, seconds: float) -> None:
        """:meth:`SlotTable.back_off`."""
        ...

    async def blocked_for(self, host: str) -> float:
        """:meth:`SlotTable.blocked_for`."""
        ...


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class MemorySlots:
    """:class:`HostSlots` in this process (several probers of one process, or the fallback
    when the shared store is down)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.table = SlotTable()

    async def acquire(self, host: str, lease: str, limit: int, ttl: float) -> float:
        """See :class:`HostSlots`."""
        return self.table.acquire(host, lease, limit, ttl, self._clock())

    async def renew(self, host: str, lease: str, ttl: float) -> bool:
        """See :class:`HostSlots`."""
        return self.table.renew(host, lease, ttl, self._clock())

    async def release(self, host: str, lease: str) -> None:
        """See :class:`HostSlots`."""
        self.table.release(host, lease)

    async def back_off(self, host: str, seconds: float) -> None:
        """See :class:`HostSlots`."""
        self.table.back_off(host, seconds, self._clock())

    async def blocked_for(self, host: str) -> float:
        """See :class:`HostSlots`."""
        return self.table.blocked_for(host, self._clock())


class BucketStore(Protocol):
    """Where the RCPT and provider-session buckets live: in this process or shared (Redis)."""

    async def take(self, key: str, rate: float, capacity: float) -> float:
        """Take one token of bucket ``key`` (created full) and return 0, or the seconds to wait."""
        ...


class MemoryBuckets:
    """Token buckets in this process (what one prober shares among its own tasks)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    async def take(self, key: str, rate: float, capacity: float) -> float:
        """Take one token of bucket ``key``; see :class:`BucketStore`."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate=rate, capacity=capacity)
        return bucket.take(self._clock())


class Politeness:
    """Per-run shared limiter: ``async with p.session(host, provider, per_minute): await p.rcpt(host)``."""

    def __init__(
        self,
        config: PolitenessConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        store: BucketStore | None = None,
        slots: HostSlots | None = None,
        sleep: Sleep = asyncio.sleep,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        self.config = config or PolitenessConfig()
        self._clock = clock
        self._sleep = sleep
        self.store = store  # None: the buckets below, in this process (back-off always is)
        self.slots = slots  # None: connection caps and back-off in this process only
        self.lease_ttl = lease_ttl
        self._pending: set[asyncio.Task[None]] = set()
        self._shared_checked: dict[str, float] = {}
        self._global = asyncio.Semaphore(self.config.global_concurrency)
        self._connections: dict[str, asyncio.Semaphore] = {}
        self._rcpt: dict[str, TokenBucket] = {}
        self._provider: dict[str, TokenBucket] = {}

    def _host_bucket(self, host: str) -> TokenBucket:
        bucket = self._rcpt.get(host)
        if bucket is None:
            per_minute = self.config.rcpt_per_minute_per_host
            bucket = TokenBucket(rate=per_minute / 60.0, capacity=max(1.0, min(per_minute, 10.0)))
            self._rcpt[host] = bucket
        return bucket

    def _provider_bucket(self, provider: str, per_minute: float) -> TokenBucket:
        bucket = self._provider.get(provider)
        if bucket is None:
            rate = self.config.sessions_per_minute_per_provider or per_minute
            bucket = TokenBucket(rate=rate / 60.0, capacity=max(1.0, min(rate, 5.0)))
            self._provider[provider] = bucket
        return bucket

    async def _wait(self, bucket: TokenBucket, key: str) -> None:
        while True:
            if self.store is None:
                delay = bucket.take(self._clock())
            else:  # the shared store holds the tokens; the local bucket only the back-off
                delay = max(0.0, bucket.blocked_until - self._clock())
                if delay <= 0:
                    delay = await self.store.take(key, bucket.rate, bucket.capacity)
            if delay <= 0:
                return
            await self._sleep(delay)

    @asynccontextmanager
    async def session(
        self,
        host: str,
        *,
        provider: str | None = None,
        provider_per_minute: float = 30.0,
        provider_connections: int | None = None,
    ) -> AsyncIterator[None]:
        """Hold a connection slot for ``host`` (and the provider's session budget) while inside."""
        limit = self.config.connections_per_host
        if provider_connections is not None:
            limit = min(limit, provider_connections)
        semaphore = self._connections.setdefault(host, asyncio.Semaphore(limit))
        async with self._global, semaphore:
            await self._wait_backoff(host)
            held = await self._take_slot(host, limit) if self.slots is not None else None
            try:
                if provider is not None:
                    bucket = self._provider_bucket(provider, provider_per_minute)
                    await self._wait(bucket, f"provider:{provider}")
                if self.config.jitter:
                    await self._sleep(random.uniform(0, self.config.jitter))
                yield
            finally:
                if held is not None:
                    await self._free_slot(host, *held)

    async def _take_slot(self, host: str, limit: int) -> tuple[str, asyncio.Task[None]]:
        """A shared slot of ``host`` (waiting out a shared back-off or a full host) and the task
        that renews its lease while the connection lives."""
        assert self.slots is not None
        lease = secrets.token_hex(8)
        while True:
            await self._wait_backoff(host)
            wait = await self.slots.acquire(host.lower(), lease, limit, self.lease_ttl)
            if wait <= 0:
                break
            await self._sleep(wait)
        keeper = asyncio.get_running_loop().create_task(self._keep(host.lower(), lease))
        return lease, keeper

    async def _keep(self, key: str, lease: str) -> None:
        assert self.slots is not None
        while True:
            await asyncio.sleep(self.lease_ttl / 3)  # real time, as the lease's expiry
            if not await self.slots.renew(key, lease, self.lease_ttl):
                log.warning("connection slot lease for %s expired before its renewal", key)
                return

    async def _free_slot(self, host: str, lease: str, keeper: asyncio.Task[None]) -> None:
        assert self.slots is not None
        keeper.cancel()
        # shielded: a cancelled session still gives its slot back (else it waits for expiry)
        await asyncio.shield(self.slots.release(host.lower(), lease))

    async def _wait_backoff(self, host: str) -> None:
        bucket = self._host_bucket(host)
        while True:
            delay = bucket.blocked_until - self._clock()
            if delay <= 0:
                return
            await self._sleep(delay)

    async def rcpt(self, host: str) -> None:
        """Wait for one RCPT token of ``host`` (and a back-off another worker set for it)."""
        if self.slots is not None:
            await self._shared_backoff(host)
        await self._wait(self._host_bucket(host), f"rcpt:{host.lower()}")

    async def _shared_backoff(self, host: str) -> None:
        """Adopt a back-off of ``host`` set by another worker (asked at most once a second)."""
        assert self.slots is not None
        now = self._clock()
        last = self._shared_checked.get(host)
        if last is not None and 0 <= now - last < 1.0:
            return
        self._shared_checked[host] = now
        wait = await self.slots.blocked_for(host.lower())
        if wait > 0:
            self._host_bucket(host).block_until(now + wait)

    def blocked_for(self, host: str) -> float:
        """Seconds ``host`` is still being left alone after a back-off (0 if it is not)."""
        return max(0.0, self._host_bucket(host).blocked_until - self._clock())

    def backoff(self, host: str, seconds: float | None = None) -> None:
        """Leave ``host`` alone for ``seconds`` (default: the configured back-off)."""
        wait = self.config.backoff if seconds is None else seconds
        if wait > 0:
            self._host_bucket(host).block_until(self._clock() + wait)
            if self.slots is not None:  # tell the other workers, without waiting for the store
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop (a synchronous caller): this process only
                    return
                task = loop.create_task(self.slots.back_off(host.lower(), wait))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
