"""A store in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Garage, R2...) through obstore
(Rust ``object_store``): streamed multipart uploads, streamed downloads, batch deletes.

Credentials are always explicit (no environment or instance-metadata lookups), and an error never
carries the endpoint's answer or a secret: it becomes :class:`StorageUnavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from datetime import timedelta

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store as _ObstoreS3

from server.storage.base import (
    ObjectNotFound,
    ObjectTooLarge,
    StorageUnavailable,
    check_key,
    check_prefix,
)

__all__ = ["S3Store"]

_PART = 8 * 1024 * 1024


class S3Store:
    """Objects in ``bucket`` under an optional ``root`` folder (e.g. ``"bavlio"``)."""

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        endpoint: str | None = None,
        region: str = "us-east-1",
        root: str = "",
    ) -> None:
        self._root = root.strip("/")
        self._store = _ObstoreS3(
            bucket,
            endpoint=endpoint,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            region=region,
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "timeout": "60s",
                "connect_timeout": "10s",
            },
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30)},
        )

    def _path(self, key: str) -> str:
        check_key(key)
        return f"{self._root}/{key}" if self._root else key

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        path = self._path(key)
        size = 0
        over = False

        async def bounded() -> AsyncIterator[bytes]:
            nonlocal size, over
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    over = True
                    raise ObjectTooLarge(f"the file exceeds {max_bytes} bytes")
                yield chunk

        try:
            await obstore.put_async(self._store, path, bounded(), chunk_size=_PART)
        except ObjectTooLarge:
            raise
        except Exception as exc:
            if over:
                raise ObjectTooLarge(f"the file exceeds {max_bytes} bytes") from None
            raise StorageUnavailable(f"S3 upload failed ({type(exc).__name__})") from None
        return size

    async def open(self, key: str, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            result = await obstore.get_async(self._store, path)
        except (NotFoundError, FileNotFoundError):
            raise ObjectNotFound(key) from None
        except Exception as exc:
            raise StorageUnavailable(f"S3 download failed ({type(exc).__name__})") from None
        try:
            async for chunk in result.stream(min_chunk_size=chunk_size):
                yield bytes(chunk)
        except Exception as exc:
            raise StorageUnavailable(f"S3 download failed ({type(exc).__name__})") from None

    async def size(self, key: str) -> int:
        path = self._path(key)
        try:
            meta = await obstore.head_async(self._store, path)
        except (NotFoundError, FileNotFoundError):
            raise ObjectNotFound(key) from None
        except Exception as exc:
            raise StorageUnavailable(f"S3 request failed ({type(exc).__name__})") from None
        return int(meta["size"])

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await obstore.delete_async(self._store, path)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as exc:
            raise StorageUnavailable(f"S3 delete failed ({type(exc).__name__})") from None

    async def delete_prefix(self, prefix: str) -> int:
        folder = self._path(check_prefix(prefix)[:-1]) + "/"
        count = 0
        try:
            async for batch in obstore.list(self._store, prefix=folder, chunk_size=1000):
                paths = [meta["path"] for meta in batch]
                if paths:
                    await obstore.delete_async(self._store, paths)
                    count += len(paths)
        except Exception as exc:
            raise StorageUnavailable(f"S3 delete failed ({type(exc).__name__})") from None
        return count
