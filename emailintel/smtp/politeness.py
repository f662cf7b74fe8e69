"""Politeness: token buckets per MX host and per provider, a global cap, jitter and back-off.

What the prober may send is decided here, so a batch never hammers one MX. :class:`TokenBucket`
is pure (time is passed in); :class:`Politeness` wraps buckets and semaphores for asyncio.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from emailintel.errors import ConfigError

__all__ = ["BucketStore", "MemoryBuckets", "Politeness", "PolitenessConfig", "TokenBucket"]

_EPSILON = 1e-9


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


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


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
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config or PolitenessConfig()
        self._clock = clock
        self._sleep = sleep
        self.store = store  # None: the buckets below, in this process (back-off always is)
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
            if provider is not None:
                bucket = self._provider_bucket(provider, provider_per_minute)
                await self._wait(bucket, f"provider:{provider}")
            if self.config.jitter:
                await self._sleep(random.uniform(0, self.config.jitter))
            yield

    async def _wait_backoff(self, host: str) -> None:
        bucket = self._host_bucket(host)
        while True:
            delay = bucket.blocked_until - self._clock()
            if delay <= 0:
                return
            await self._sleep(delay)

    async def rcpt(self, host: str) -> None:
        """Wait for one RCPT token of ``host``."""
        await self._wait(self._host_bucket(host), f"rcpt:{host.lower()}")

    def blocked_for(self, host: str) -> float:
        """Seconds ``host`` is still being left alone after a back-off (0 if it is not)."""
        return max(0.0, self._host_bucket(host).blocked_until - self._clock())

    def backoff(self, host: str, seconds: float | None = None) -> None:
        """Leave ``host`` alone for ``seconds`` (default: the configured back-off)."""
        wait = self.config.backoff if seconds is None else seconds
        if wait > 0:
            self._host_bucket(host).block_until(self._clock() + wait)
