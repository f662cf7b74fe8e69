"""Authorization locks: at most one holder per key until released or expired.

`InProcessLocks` serves one process (many asyncio tasks); `RedisLocks` serves many processes with
`SET key token NX PX ttl` and a compare-and-delete release, so a holder whose lock expired and
was taken over can never release the new holder's lock.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from x402gw.ledger.rules import LedgerError, authorization_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "AuthorizationLocked",
    "AuthorizationLocks",
    "InProcessLocks",
    "InvalidLockRequest",
    "LockError",
    "LockHandle",
    "LockUnavailable",
    "RedisLocks",
    "authorization_key",
    "hold",
]

MAX_TTL_SECONDS = 7 * 24 * 3600.0


class LockError(LedgerError):
    """Base class of lock errors."""


class AuthorizationLocked(LockError):
    """Another holder has the lock for this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"authorization is locked by another request: {key}")
        self.key = key


class LockUnavailable(LockError):
    """The lock backend could not be reached; callers must not assume exclusivity."""


class InvalidLockRequest(LockError, ValueError):
    """A key or TTL that cannot name a lock."""


@dataclass(frozen=True, slots=True)
class LockHandle:
    """Proof of holding `key`; the random `token` makes release safe."""

    key: str
    token: str


class AuthorizationLocks(Protocol):
    """What the ledger needs from a lock backend."""

    async def acquire(self, key: str, ttl_seconds: float) -> LockHandle:
        """Take the lock or raise :class:`AuthorizationLocked`."""
        ...

    async def release(self, handle: LockHandle) -> bool:
        """Drop the lock if `handle` still holds it; False if it expired or was taken over."""
        ...


def _check(key: str, ttl_seconds: float) -> int:
    if not isinstance(key, str) or not 0 < len(key) <= 1000:
        raise InvalidLockRequest(f"lock key must be 1-1000 characters, got {key!r}")
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int | float)
        or not math.isfinite(ttl_seconds)
        or not 0 < ttl_seconds <= MAX_TTL_SECONDS
    ):
        raise InvalidLockRequest(
            f"ttl must be in (0, {MAX_TTL_SECONDS}] seconds, got {ttl_seconds!r}"
        )
    return max(1, math.ceil(ttl_seconds * 1000))


class InProcessLocks:
    """Locks in a dict; `clock` is injectable so expiry can be tested without sleeping."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    async def acquire(self, key: str, ttl_seconds: float) -> LockHandle:
        """Take `key` for `ttl_seconds` unless a live holder has it."""
        ttl_ms = _check(key, ttl_seconds)
        token = secrets.token_hex(16)
        with self._mutex:
            now = self._clock()
            held = self._held.get(key)
            if held is not None and held[1] > now:
                raise AuthorizationLocked(key)
            self._held[key] = (token, now + ttl_ms / 1000)
        return LockHandle(key, token)

    async def release(self, handle: LockHandle) -> bool:
        """Drop the lock only if `handle`'s token still holds it and it has not expired."""
        with self._mutex:
            held = self._held.get(handle.key)
            if held is None or held[0] != handle.token:
                return False
            del self._held[handle.key]
            return held[1] > self._clock()


_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLocks:
    """Locks in Redis (`SET NX PX`), shared by every process that uses the same server and prefix."""

    def __init__(self, client: Redis, *, prefix: str = "x402gw:authorization:") -> None:
        self._client = client
        self._prefix = prefix
        self._release = client.register_script(_RELEASE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "x402gw:authorization:") -> RedisLocks:
        """Connect lazily to `redis://host:port/db`."""
        from redis.asyncio import Redis

        return cls(Redis.from_url(url), prefix=prefix)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()

    async def acquire(self, key: str, ttl_seconds: float) -> LockHandle:
        """Take `key` for `ttl_seconds` unless another holder has it."""
        from redis.exceptions import RedisError

        ttl_ms = _check(key, ttl_seconds)
        token = secrets.token_hex(16)
        try:
            ok = await self._client.set(self._prefix + key, token, nx=True, px=ttl_ms)
        except (RedisError, OSError) as exc:
            raise LockUnavailable(f"redis lock backend unreachable: {exc}") from exc
        if not ok:
            raise AuthorizationLocked(key)
        return LockHandle(key, token)

    async def release(self, handle: LockHandle) -> bool:
        """Delete the key only if it still holds `handle.token` (atomic, in a Lua script)."""
        from redis.exceptions import RedisError

        try:
            deleted = await self._release(keys=[self._prefix + handle.key], args=[handle.token])
        except (RedisError, OSError) as exc:
            raise LockUnavailable(f"redis lock backend unreachable: {exc}") from exc
        return bool(deleted)


@asynccontextmanager
async def hold(
    locks: AuthorizationLocks, key: str, ttl_seconds: float
) -> AsyncIterator[LockHandle]:
    """Hold `key` for the duration of the block; raises :class:`AuthorizationLocked` if taken."""
    handle = await locks.acquire(key, ttl_seconds)
    try:
        yield handle
    finally:
        await locks.release(handle)
