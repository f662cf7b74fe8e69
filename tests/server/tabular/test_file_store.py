"""One behaviour suite for every file store: LocalStore, and S3Store against a real
S3-compatible server (SeaweedFS on loopback)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from s3lab import S3Lab, running_s3

from server.settings import Settings
from server.storage import (
    FileStore,
    InvalidKey,
    LocalStore,
    ObjectNotFound,
    ObjectTooLarge,
    S3Store,
    StorageUnavailable,
    store_from_settings,
)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Lab]:
    with running_s3(tmp_path_factory.mktemp("seaweedfs")) as lab:
        yield lab


_S3_RUNS = iter(range(1_000_000))


@pytest_asyncio.fixture(
    loop_scope="function", params=["local", pytest.param("s3", marks=pytest.mark.lab)]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "files")
        return
    lab: S3Lab = request.getfixturevalue("s3_server")
    yield S3Store(
        bucket=lab.bucket,
        endpoint=lab.endpoint,
        access_key_id=lab.access_key_id,
        secret_access_key=lab.secret_access_key,
        root=f"run{next(_S3_RUNS)}-{os.getpid()}",
    )


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read(store: FileStore, key: str, chunk_size: int = 64 * 1024) -> bytes:
    return b"".join([chunk async for chunk in store.open(key, chunk_size)])


async def test_put_open_size_exists_delete(store: FileStore) -> None:
    assert not await store.exists("u1/a.csv")
    size = await store.put("u1/a.csv", chunks(b"email\n", b"ann@acme.test\n"), max_bytes=1000)
    assert size == 20
    assert await store.exists("u1/a.csv")
    assert await store.size("u1/a.csv") == 20
    assert await read(store, "u1/a.csv") == b"email\nann@acme.test\n"
    await store.put("u1/a.csv", chunks(b"replaced"), max_bytes=1000)
    assert await read(store, "u1/a.csv") == b"replaced"
    await store.delete("u1/a.csv")
    await store.delete("u1/a.csv")  # idempotent
    assert not await store.exists("u1/a.csv")


async def test_missing_objects(store: FileStore) -> None:
    with pytest.raises(ObjectNotFound):
        await read(store, "nope/x.csv")
    with pytest.raises(ObjectNotFound):
        await store.size("nope/x.csv")


async def test_large_object_streams_in_chunks(store: FileStore) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    size = await store.put("big/f.bin", chunks(*[block] * 12), max_bytes=64 * 1024 * 1024)
    assert size == 12 * len(block)
    total = 0
    async for chunk in store.open("big/f.bin", 256 * 1024):
        assert chunk
        total += len(chunk)
    assert total == size


async def test_size_cap_stores_nothing(store: FileStore) -> None:
    with pytest.raises(ObjectTooLarge):
        await store.put("u2/f.csv", chunks(b"x" * 600, b"y" * 600), max_bytes=1000)
    assert not await store.exists("u2/f.csv")
    await store.put("u2/f.csv", chunks(b"old"), max_bytes=10)
    with pytest.raises(ObjectTooLarge):
        await store.put("u2/f.csv", chunks(b"z" * 11), max_bytes=10)
    assert await read(store, "u2/f.csv") == b"old"  # the previous object is untouched


async def test_delete_prefix(store: FileStore) -> None:
    for key in ("u3/d1/a", "u3/d1/b", "u3/d1/sub/c", "u3/d2/a", "u3x/a"):
        await store.put(key, chunks(b"1"), max_bytes=10)
    assert await store.delete_prefix("u3/d1/") == 3
    assert not await store.exists("u3/d1/a")
    assert not await store.exists("u3/d1/sub/c")
    assert await store.exists("u3/d2/a")
    assert await store.exists("u3x/a")
    assert await store.delete_prefix("u3/none/") == 0
    with pytest.raises(InvalidKey):
        await store.delete_prefix("u3")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../etc/passwd",
        "a/../../b",
        "/abs",
        "a//b",
        "a/./b",
        ".hidden",
        "a/.tmp/x",
        "a\\b",
        "a/b/",
        "é",
        "a b",
        "x" * 513,
        "a\x00b",
    ],
)
async def test_hostile_keys_are_refused(store: FileStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, chunks(b"1"), max_bytes=10)
    with pytest.raises(InvalidKey):
        await store.exists(key)
    with pytest.raises(InvalidKey):
        await read(store, key)
    with pytest.raises(InvalidKey):
        await store.delete(key)


async def test_local_store_never_leaves_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    root = tmp_path / "files"
    root.mkdir()
    (root / "link").symlink_to(outside)
    store = LocalStore(root)
    assert not await store.exists("link/secret")
    with pytest.raises(ObjectNotFound):
        await read(store, "link/secret")
    assert sorted(p.name for p in root.iterdir()) == ["link"]


async def test_unreachable_s3_is_unavailable_without_secrets() -> None:
    store = S3Store(
        bucket="b",
        endpoint="http://127.0.0.1:9",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="very-secret-value",
    )
    with pytest.raises(StorageUnavailable) as caught:
        await store.put("a/b", chunks(b"1"), max_bytes=10)
    assert "very-secret-value" not in str(caught.value)
    with pytest.raises(StorageUnavailable):
        await store.exists("a/b")


def test_store_from_settings(tmp_path: Path) -> None:
    sqlite = Settings(database_url=f"sqlite:///{tmp_path}/db/bavlio.sqlite3")
    assert sqlite.storage_path() == tmp_path / "db" / "bavlio-files"
    chosen = Settings(storage_dir=tmp_path / "elsewhere")
    local = store_from_settings(chosen)
    assert isinstance(local, LocalStore)
    assert local.root == (tmp_path / "elsewhere").resolve()
    assert Settings(database_url="postgresql://x@h/db").storage_path() == Path("bavlio-files")
    s3 = Settings(
        s3_bucket="b",
        s3_access_key_id="k",
        s3_secret_access_key="s" * 8,
        s3_endpoint="http://127.0.0.1:9000",
    )
    assert isinstance(store_from_settings(s3), S3Store)
    with pytest.raises(ValueError, match="s3_access_key_id"):
        Settings(s3_bucket="b")
    with pytest.raises(ValueError, match="s3_endpoint"):
        Settings(
            s3_bucket="b", s3_access_key_id="k", s3_secret_access_key="s", s3_endpoint="ftp://x"
        )
