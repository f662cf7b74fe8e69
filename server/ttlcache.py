"""A per-key result cache with a time to live, where concurrent misses share one computation.

Readiness uses it so that a burst of probes asks the chain RPC and DNS once, not once each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["SharedTtlCache"]

T = TypeVar("T")


class SharedTtlCache(Generic[T]):
    """``await cache.get(key, ttl, compute)``: the value computed at most ``ttl`` seconds ago."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[float, T]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, ttl: float, compute: Callable[[], Awaitable[T]]) -> T:
        """The cached value of ``key``, else ``await compute()`` (callers waiting share it).

        ``ttl <= 0`` computes every time.
        """
        if ttl <= 0:
            return await compute()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._values.get(key)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            value = await compute()
            self._values[key] = (self._clock() + ttl, value)
            return value
