"""A store in a local directory: each key is a file below the root, written to a temporary file
first and renamed into place (a reader never sees half an object)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from server.storage.base import (
    ObjectNotFound,
    ObjectTooLarge,
    StorageUnavailable,
    check_key,
    check_prefix,
)

__all__ = ["LocalStore"]

_TMP = ".tmp"


class LocalStore:
    """Files under ``root`` (created when missing); keys map to paths that cannot leave it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ObjectNotFound(key)  # a symlink pointing out: treat as absent
        return path

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        path = self._path(key)
        tmp_dir = self.root / _TMP
        try:
            await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot create the storage directory: {exc.strerror}"
            ) from exc
        tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
        size = 0
        handle = await asyncio.to_thread(tmp.open, "wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ObjectTooLarge(f"the file exceeds {max_bytes} bytes")
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, tmp, path)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write the file: {exc.strerror}") from exc
        finally:
            handle.close()
            tmp.unlink(missing_ok=True)
        return size

    async def open(self, key: str, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def size(self, key: str) -> int:
        path = self._path(key)
        if not await asyncio.to_thread(path.is_file):
            raise ObjectNotFound(key)
        return (await asyncio.to_thread(path.stat)).st_size

    async def exists(self, key: str) -> bool:
        try:
            return await asyncio.to_thread(self._path(key).is_file)
        except ObjectNotFound:
            return False

    async def delete(self, key: str) -> None:
        path = self._path(key)
        if await asyncio.to_thread(path.is_file):
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def delete_prefix(self, prefix: str) -> int:
        folder = self._path(check_prefix(prefix)[:-1])
        if not await asyncio.to_thread(folder.is_dir):
            return 0

        def remove() -> int:
            count = sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
            return count

        return await asyncio.to_thread(remove)
