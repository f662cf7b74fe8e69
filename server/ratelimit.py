"""Rate limits of the paid routes (per client address and payer) and of the keyed API (per key,
by plan) with the ``limits`` package: in memory, or in Redis when
``BAVLIO_REDIS_URL`` is set so every server process counts against the same windows.

The payment gate asks for ``ip:<client>`` on every paid request and ``payer:<address>`` once a
payment's signature checks out offline. A store that fails is logged and lets requests through.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

__all__ = ["KeyRateLimiter", "LocalWindows", "PaidRateLimiter", "Quota", "parse_limit"]

log = logging.getLogger("server.ratelimit")


def parse_limit(text: str) -> RateLimitItem:
    """``"120/minute"`` (the ``limits`` notation) as an item; ValueError when malformed."""
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"not a rate limit such as '120/minute': {text!r}") from exc


class PaidRateLimiter:
    """Per client address and per payer sliding windows (x402gw's ``RateLimiter``)."""

    def __init__(
        self, per_ip: RateLimitItem, per_payer: RateLimitItem, redis_url: str | None = None
    ) -> None:
        self.storage: Storage = (
            RedisStorage(redis_url, implementation="redispy", wrap_exceptions=True)
            if redis_url
            else MemoryStorage()
        )
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)
        self._items = {"ip": per_ip, "payer": per_payer}

    async def hit(self, key: str) -> float | None:
        """None when ``key`` may go on, else the seconds until its window lets it."""
        item = self._items.get(key.partition(":")[0])
        if item is None:
            return None
        try:
            if await self._limiter.hit(item, "bavlio-paid", key):
                return None
            stats = await self._limiter.get_window_stats(item, "bavlio-paid", key)
        except Exception as exc:  # the store is down: fail open, as promised
            log.warning("rate limit store failed (%s); request let through", type(exc).__name__)
            return None
        return max(stats.reset_time - time.time(), 1.0)


@dataclass(frozen=True)
class Quota:
    """One rate-limit decision and the numbers the response headers carry."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    window: int

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-*``, the IETF ``RateLimit``/``RateLimit-Policy`` fields, and
        ``Retry-After`` when refused."""
        reset = max(int(self.reset_after + 0.999), 0)
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(int(time.time()) + reset),
            "RateLimit-Policy": f'"default";q={self.limit};w={self.window}',
            "RateLimit": f'"default";r={self.remaining};t={reset}',
        }
        if not self.allowed:
            out["Retry-After"] = str(max(reset, 1))
        return out


class LocalWindows:
    """In-process sliding-window counters with the arithmetic of ``limits``' sliding-window
    counter on its memory storage (the previous window's count weighted by the part of it still
    inside the sliding window, plus the current window's count), in one synchronous call that
    counts the hit and returns the window's numbers: no locks, tasks or key strings per hit.

    Pure: the caller passes the clock. Counters of windows no longer read are dropped.
    """

    sweep_every = 4096
    """Hits between two sweeps of identities whose windows have all passed."""

    def __init__(self) -> None:
        # key -> {window index: count}: the previous and current windows (and the one before
        # until the key's next hit or sweep); key -> its window length
        self._counts: dict[Hashable, dict[int, int]] = {}
        self._expiries: dict[Hashable, int] = {}
        self._hits = 0

    def hit(
        self, key: Hashable, amount: int, expiry: int, now: float, cost: int = 1
    ) -> tuple[bool, int, float]:
        """Count ``cost`` against ``amount`` per ``expiry`` seconds for ``key`` (refused hits
        count nothing): (allowed, remaining, seconds until the next slot frees)."""
        self._hits += 1
        if self._hits % self.sweep_every == 0:
            self._sweep(now)
        current_index = int(now / expiry)
        previous_index = int((now - expiry) / expiry)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = {}
            self._expiries[key] = expiry
        elif len(counts) > 1:
            for index in [i for i in counts if i < previous_index]:
                del counts[index]  # a window the sliding window no longer reaches
        previous = counts.get(previous_index, 0)
        current = counts.get(current_index, 0)
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        allowed = cost <= amount and (
            math.floor(previous * previous_ttl / expiry + current) + cost <= amount
        )
        if allowed:
            current += cost
            counts[current_index] = current
        remaining = max(0, amount - math.floor(previous * previous_ttl / expiry + current))
        if not (previous or current):
            return allowed, remaining, 0.0
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        reset_in = math.inf
        if previous:
            reset_in = previous_ttl % (expiry / previous)
        if current:
            reset_in = min(reset_in, current_ttl % expiry)
        return allowed, remaining, reset_in

    def _sweep(self, now: float) -> None:
        """Drop the identities no sliding window reaches any more (all counts too old)."""
        stale = []
        for key, counts in self._counts.items():
            expiry = self._expiries[key]
            previous_index = int((now - expiry) / expiry)
            if all(index < previous_index for index in counts):
                stale.append(key)
        for key in stale:
            del self._counts[key], self._expiries[key]

    def __len__(self) -> int:
        return len(self._counts)


class KeyRateLimiter:
    """Per key (or per user for session tokens) windows of the keyed API, by plan.

    Shares storage semantics with :class:`PaidRateLimiter`: memory (:class:`LocalWindows`, the
    same counting as ``limits``' in-memory sliding-window counter without its per-hit locks and
    tasks), or Redis when configured; a store that fails lets the request through (``None``) and
    is logged.
    """

    def __init__(self, redis_url: str | None = None) -> None:
        self.storage: Storage | None = (
            RedisStorage(redis_url, implementation="redispy", wrap_exceptions=True)
            if redis_url
            else None
        )
        self._limiter = (
            SlidingWindowCounterRateLimiter(self.storage) if self.storage is not None else None
        )
        self.local = LocalWindows()
        self._items: dict[str, RateLimitItem] = {}

    def _item(self, limit: str) -> RateLimitItem:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = parse_limit(limit)
        return item

    async def hit(self, identity: str, limit: str) -> Quota | None:
        """Count one request of ``identity`` against ``limit``; None when the store is down."""
        item = self._item(limit)
        if self._limiter is None:
            expiry = item.get_expiry()
            allowed, remaining, reset_in = self.local.hit(
                (limit, identity), item.amount, expiry, time.time()
            )
            return Quota(allowed, item.amount, remaining, reset_in, expiry)
        try:
            allowed = await self._limiter.hit(item, "bavlio-keyed", identity)
            stats = await self._limiter.get_window_stats(item, "bavlio-keyed", identity)
        except Exception as exc:  # fail open, as the seed promises
            log.warning("rate limit store failed (%s); request let through", type(exc).__name__)
            return None
        return Quota(
            allowed=allowed,
            limit=item.amount,
            remaining=max(stats.remaining, 0),
            reset_after=max(stats.reset_time - time.time(), 0.0),
            window=item.get_expiry(),
        )
