"""Politeness token buckets in Redis, so several workers together keep one MX's rate.

One Lua script refills and takes atomically, so workers never both spend the last token. When
Redis fails the take falls back to an in-process bucket and logs (fail open: this worker alone
still keeps the rate). ``redis`` is optional: it is imported when a store is made.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from emailintel.errors import ConfigError
from emailintel.smtp.politeness import Clock, MemoryBuckets

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBuckets"]

log = logging.getLogger("emailintel.smtp.redisbuckets")

# KEYS[1] bucket; ARGV rate/s, capacity, now (negative: the Redis server's clock). Returns the
# wait as a string (Lua numbers become integers in replies).
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
  updated = now
end
if now > updated then
  tokens = math.min(capacity, tokens + (now - updated) * rate)
  updated = now
end
local wait = 0
if tokens + 1e-9 >= 1 then
  tokens = math.max(0, tokens - 1)
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""


class RedisBuckets:
    """A :class:`~emailintel.smtp.politeness.BucketStore` in Redis, shared by every prober on it.

    ``clock`` is for tests (every sharer must pass the same one); by default the Redis server's
    clock is used, so workers on different machines agree on time.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "emailintel:politeness:",
        clock: Clock | None = None,
    ) -> None:
        if client is None:
            if not url:
                raise ConfigError("RedisBuckets needs a Redis URL or client")
            try:
                from redis.asyncio import Redis
            except ImportError:
                raise ConfigError(
                    "shared politeness buckets need the redis package (pip install redis)"
                ) from None
            try:
                client = Redis.from_url(url)
            except ValueError as exc:
                raise ConfigError(f"bad Redis URL for politeness buckets: {exc}") from None
        self.client = client
        self.prefix = prefix
        self._clock = clock
        self._script: Any = client.register_script(_TAKE)
        self.fallback = MemoryBuckets(clock or time.monotonic)
        self.failures = 0

    async def take(self, key: str, rate: float, capacity: float) -> float:
        """Take one token of the shared bucket ``key``; an in-process one while Redis fails."""
        now = -1.0 if self._clock is None else self._clock()
        try:
            reply = await self._script(keys=[self.prefix + key], args=[rate, capacity, now])
            return max(0.0, float(reply))
        except Exception as exc:  # Redis down or refusing: fail open to this process's bucket
            self.failures += 1
            log.warning(
                "politeness store failed (%s); using this worker's own bucket for %s",
                type(exc).__name__,
                key,
            )
            return await self.fallback.take(key, rate, capacity)

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self.client.aclose()
