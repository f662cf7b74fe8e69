"""The file-store interface and its errors; keys are checked here for every store."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

__all__ = [
    "FileStore",
    "InvalidKey",
    "ObjectNotFound",
    "ObjectTooLarge",
    "StorageError",
    "StorageUnavailable",
    "check_key",
    "check_prefix",
]

MAX_KEY = 512
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}"
_KEY = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")


class StorageError(Exception):
    """Root of the store errors."""


class InvalidKey(StorageError, ValueError):
    """A key that is not ``segment(/segment)*`` of ``[A-Za-z0-9._=-]`` not starting with a dot
    (so no ``..``, no absolute path, no backslash), or longer than 512 characters."""


class ObjectNotFound(StorageError, KeyError):
    """No object at this key."""


class ObjectTooLarge(StorageError):
    """The stream passed to ``put`` exceeded its ``max_bytes`` (nothing was stored)."""


class StorageUnavailable(StorageError):
    """The backing store failed (disk, network, S3 error); the message names no secret."""


def check_key(key: str) -> str:
    """``key`` if it is a valid key (see :class:`InvalidKey`)."""
    if len(key) > MAX_KEY or not _KEY.match(key):
        raise InvalidKey(f"invalid storage key {key[:80]!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A folder prefix: a valid key followed by ``/``."""
    if not prefix.endswith("/"):
        raise InvalidKey("a prefix must end with '/'")
    check_key(prefix[:-1])
    return prefix


class FileStore(Protocol):
    """Where uploaded and exported files live. Every method checks its key first."""

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        """Store the stream at ``key`` (replacing any object) and return its size; at most
        ``max_bytes`` (ObjectTooLarge beyond, and nothing is stored)."""
        ...

    def open(self, key: str, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """The object's bytes in chunks (ObjectNotFound raised on the first iteration)."""
        ...

    async def size(self, key: str) -> int:
        """The object's size (ObjectNotFound)."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object (no error if there is none)."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder ``prefix`` (ending in ``/``); how many."""
        ...
