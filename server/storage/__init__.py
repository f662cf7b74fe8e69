"""Where uploaded and exported files live: a small async interface, two implementations.

::

    store = store_from_settings(settings)        # S3Store when BAVLIO_S3_BUCKET is set,
                                                 # else LocalStore(settings.storage_path())
    size = await store.put(key, async_chunks, max_bytes=N)   # ObjectTooLarge beyond N
    async for chunk in store.open(key): ...      # ObjectNotFound
    await store.size(key); await store.exists(key)
    await store.delete(key)                      # idempotent
    await store.delete_prefix("user_x/")         # a folder prefix; returns the count

Keys are ``segment(/segment)*`` of ``[A-Za-z0-9._=-]``, no segment starting with a dot, at
most 512 characters (:class:`InvalidKey` otherwise): no ``..``, absolute path or backslash can
reach the file system. Errors: :class:`StorageError` > InvalidKey, ObjectNotFound,
ObjectTooLarge, StorageUnavailable.
"""

from __future__ import annotations

from server.settings import Settings
from server.storage.base import (
    FileStore,
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    check_key,
    check_prefix,
)
from server.storage.local import LocalStore
from server.storage.s3 import S3Store

__all__ = [
    "FileStore",
    "InvalidKey",
    "LocalStore",
    "ObjectNotFound",
    "ObjectTooLarge",
    "S3Store",
    "StorageError",
    "StorageUnavailable",
    "check_key",
    "check_prefix",
    "store_from_settings",
]


def store_from_settings(settings: Settings) -> FileStore:
    """The configured store: S3 when a bucket is set, else the local storage directory."""
    key, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    if settings.s3_bucket and key and secret:  # the settings refuse a bucket without both
        return S3Store(
            bucket=settings.s3_bucket,
            endpoint=settings.s3_endpoint,
            access_key_id=key,
            secret_access_key=secret.get_secret_value(),
            region=settings.s3_region,
            root=settings.s3_prefix,
        )
    return LocalStore(settings.storage_path())
