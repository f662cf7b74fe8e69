"""Rate limits of the paid routes with the ``limits`` package: in memory, or in Redis when
``BAVLIO_REDIS_URL`` is set so every server process counts against the same windows.

The payment gate asks for ``ip:<client>`` on every paid request and ``payer:<address>`` once a
payment's signature checks out offline. A store that fails is logged and lets requests through.
"""

from __future__ import annotations

import logging
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

__all__ = ["PaidRateLimiter", "parse_limit"]

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
