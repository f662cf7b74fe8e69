"""A bounded TTL cache and single-flight call sharing for DNS answers (no network I/O)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """LRU cache whose entries expire after their own TTL; never holds more than ``max_entries``."""

    def __init__(self, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        """The live value for ``key`` (refreshing its LRU position), or None if absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; a TTL of zero or less is not cached at all."""
        if ttl <= 0 or self._max == 0:
            self._data.pop(key, None)
            return
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._evict_one()

    def clear(self) -> None:
        """Forget every entry."""
        self._data.clear()

    def _evict_one(self) -> None:
        # Prefer dropping something already expired over the least recently used live entry.
        now = self._clock()
        for key, (expires, _) in self._data.items():
            if now >= expires:
                del self._data[key]
                return
        self._data.popitem(last=False)


class SingleFlight(Generic[K, V]):
    """Runs at most one coroutine per key at a time; concurrent callers share its result.

    The shared work runs in its own task, so a caller that is cancelled does not cancel the
    others. Work is only shared between callers on the same event loop.
    """

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """Await the in-flight call for ``key``, starting ``work()`` if there is none."""
        loop = asyncio.get_running_loop()
        task = self._calls.get(key)
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(work())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter may have been cancelled
