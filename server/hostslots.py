"""Per-MX connection slots and back-off in Redis, shared by every ``bavlio serve``/``bavlio
worker`` on it (:class:`emailintel.smtp.politeness.HostSlots`), so workers together never open
more connections to one MX than its cap, and all leave an MX alone once one is told to back off.

A slot is a lease in a sorted set (score: its expiry on the Redis server's clock), taken by one
Lua script that drops expired leases, honours the back-off and counts, so two workers never both
take the last slot; a worker that dies stops renewing and its slots free themselves. A back-off
is a key that expires with it. When Redis fails, this worker falls back to its own slots and
back-offs and logs it (fail open, as the buckets and the rate limits do).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis

from emailintel.smtp.politeness import MemorySlots

__all__ = ["RedisHostSlots"]

log = logging.getLogger("server.hostslots")

# KEYS: slots zset, back-off key; ARGV: lease, limit, ttl (s), poll (s). The wait as a string.
_ACQUIRE = """
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return tostring(blocked / 1000) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  local keep = math.ceil(ttl * 1000) + 1000
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
  return '0'
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = math.min(tonumber(first[2]) - now, tonumber(ARGV[4]))
return tostring(math.max(wait, 0.000001))
"""

# KEYS: slots zset; ARGV: lease, ttl (s). 1 when the live lease was extended, else 0.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
local keep = math.ceil(ttl * 1000) + 1000
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 1
"""

# KEYS: back-off key; ARGV: milliseconds. A longer back-off already set stays.
_BACK_OFF = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 1
"""


class RedisHostSlots:
    """:class:`~emailintel.smtp.politeness.HostSlots` in Redis, with this worker's own
    :class:`~emailintel.smtp.politeness.MemorySlots` while Redis fails."""

    def __init__(
        self, client: Redis, *, prefix: str = "emailintel:politeness:", poll: float = 0.1
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.poll = poll
        self.fallback = MemorySlots()
        self.failures = 0
        self._local: set[tuple[str, str]] = set()  # leases the fallback granted
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._renew: Any = client.register_script(_RENEW)
        self._back_off: Any = client.register_script(_BACK_OFF)

    def _keys(self, host: str) -> list[str]:
        return [f"{self.prefix}slots:{host}", f"{self.prefix}backoff:{host}"]

    def _failed(self, exc: Exception, what: str, host: str) -> None:
        self.failures += 1
        log.warning(
            "politeness store failed (%s); this worker's own %s for %s",
            type(exc).__name__,
            what,
            host,
        )

    async def acquire(self, host: str, lease: str, limit: int, ttl: float) -> float:
        """See :class:`~emailintel.smtp.politeness.HostSlots`."""
        try:
            reply = await self._acquire(keys=self._keys(host), args=[lease, limit, ttl, self.poll])
        except Exception as exc:  # Redis down or refusing: this worker's own slots
            self._failed(exc, "connection slots", host)
            wait = await self.fallback.acquire(host, lease, limit, ttl)
            if wait <= 0:
                self._local.add((host, lease))
            return wait
        return max(0.0, float(reply))

    async def renew(self, host: str, lease: str, ttl: float) -> bool:
        """See :class:`~emailintel.smtp.politeness.HostSlots`."""
        if (host, lease) in self._local:
            return await self.fallback.renew(host, lease, ttl)
        try:
            return bool(await self._renew(keys=self._keys(host)[:1], args=[lease, ttl]))
        except Exception as exc:
            self._failed(exc, "lease renewal", host)
            return True  # unknown: the lease may still live; it is tried again later

    async def release(self, host: str, lease: str) -> None:
        """See :class:`~emailintel.smtp.politeness.HostSlots`."""
        if (host, lease) in self._local:
            self._local.discard((host, lease))
            await self.fallback.release(host, lease)
            return
        try:
            await self.client.zrem(self._keys(host)[0], lease)
        except Exception as exc:  # the lease expires on its own
            self._failed(exc, "slot release", host)

    async def back_off(self, host: str, seconds: float) -> None:
        """See :class:`~emailintel.smtp.politeness.HostSlots` (kept here too, for a fallback)."""
        await self.fallback.back_off(host, seconds)
        try:
            await self._back_off(keys=self._keys(host)[1:], args=[max(1, round(seconds * 1000))])
        except Exception as exc:
            self._failed(exc, "back-off", host)

    async def blocked_for(self, host: str) -> float:
        """See :class:`~emailintel.smtp.politeness.HostSlots`."""
        local = await self.fallback.blocked_for(host)
        try:
            left = int(await self.client.pttl(self._keys(host)[1]))
        except Exception as exc:
            self._failed(exc, "back-off", host)
            return local
        return max(local, left / 1000 if left > 0 else 0.0)
