"""Stored documents (extraction JSON) as whole byte strings over the deployment's file store
(server.storage: a local directory, or S3 when configured): ``put``/``get``/``delete`` by key.
Documents are small (bounded by the request body limit), so they are read whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

from server.services import Services
from server.storage import FileStore, ObjectNotFound, store_from_settings

__all__ = ["DocumentMissing", "Documents", "documents_for"]


class DocumentMissing(Exception):
    """No document under this key."""


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Documents:
    """Whole documents on a :class:`FileStore`."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing)."""
        await self.store.put(key, _once(data), max_bytes=len(data))

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; DocumentMissing when there are none."""
        try:
            return b"".join([chunk async for chunk in self.store.open(key)])
        except ObjectNotFound:
            raise DocumentMissing(key) from None

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing when it is absent)."""
        await self.store.delete(key)


def documents_for(svc: Services) -> Documents:
    """This deployment's documents: on the configured file store."""
    return Documents(store_from_settings(svc.settings))
