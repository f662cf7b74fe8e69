"""Where stored documents (extraction JSON, uploaded files) live, behind one small interface:
``put``/``get``/``delete`` by key. :func:`documents_for` is the one place that picks the
implementation (a local directory until server/storage lands; then its store)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Protocol

from server.services import Services

__all__ = ["DocumentMissing", "Documents", "LocalDocuments", "documents_for"]

_KEY = re.compile(r"[a-z0-9_]{1,40}(/[A-Za-z0-9_.-]{1,120}){1,3}")


class DocumentMissing(Exception):
    """No document under this key."""


class Documents(Protocol):
    """A key -> bytes store."""

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing)."""

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; DocumentMissing when there are none."""

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing when it is absent)."""


class LocalDocuments:
    """Documents as files under ``root`` (keys are checked, so none escapes it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key) or ".." in key:
            raise ValueError(f"not a document key: {key[:80]!r}")
        return self.root / key

    async def put(self, key: str, data: bytes) -> None:
        """Write through a temporary file, so a reader never sees half a document."""
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(data)
            partial.replace(path)

        await asyncio.to_thread(write)

    async def get(self, key: str) -> bytes:
        """The file's bytes."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise DocumentMissing(key) from None

    async def delete(self, key: str) -> None:
        """Remove the file if present."""
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)


def documents_for(svc: Services) -> Documents:
    """This deployment's document store: ``files/`` beside the master secret for now."""
    return LocalDocuments(svc.settings.master_secret_path().parent / "files")
