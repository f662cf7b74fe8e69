"""Rate limits of the paid routes (per client address and payer) and of the keyed API (per key,
by plan) with the ``limits`` package: in memory, or in Redis when
``BAVLIO_REDIS_URL`` is set so every server process counts against the same windows.

The payment gate asks for ``ip:<client>`` on every paid request and ``payer:<address>`` once a
payment's signature checks out offline. A store that fails is logged and lets requests through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

__all__ = ["KeyRateLimiter", "PaidRateLimiter", "Quota", "parse_limit"]

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


class KeyRateLimiter:
    """Per key (or per user for session tokens) windows of the keyed API, by plan.

    Shares storage semantics with :class:`PaidRateLimiter`: memory, or Redis when configured; a
    store that fails lets the request through (``None``) and is logged.
    """

    def __init__(self, redis_url: str | None = None) -> None:
        self.storage: Storage = (
            RedisStorage(redis_url, implementation="redispy", wrap_exceptions=True)
            if redis_url
            else MemoryStorage()
        )
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)
        self._items: dict[str, RateLimitItem] = {}

    def _item(self, limit: str) -> RateLimitItem:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = parse_limit(limit)
        return item

    async def hit(self, identity: str, limit: str) -> Quota | None:
        """Count one request of ``identity`` against ``limit``; None when the store is down."""
        item = self._item(limit)
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
