"""The local raw store: atomic files under a root, keys that cannot escape it."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.mail.inbound_ports import LocalRawStore, RawStoreError, StaticRouting


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


async def test_put_get_delete(tmp_path: Path) -> None:
    store = LocalRawStore(tmp_path / "root")
    await store.put("inbound/inb_1.eml", b"one")
    await store.put("inbound/inb_1.eml", b"two")  # replaced whole
    assert await store.get("inbound/inb_1.eml") == b"two"
    assert _names(tmp_path / "root" / "inbound") == ["inb_1.eml"]
    await store.delete("inbound/inb_1.eml")
    await store.delete("inbound/inb_1.eml")  # absent is fine
    assert await store.get("inbound/inb_1.eml") is None


@pytest.mark.parametrize(
    "key",
    ["", "../x", "inbound/../../etc/passwd", "/abs", "inbound/.hidden", "a//b", "A/b", "x\x00"],
)
async def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalRawStore(tmp_path)
    with pytest.raises(RawStoreError):
        await store.put(key, b"x")
    with pytest.raises(RawStoreError):
        await store.get(key)
    with pytest.raises(RawStoreError):
        await store.delete(key)


async def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    (tmp_path / "inbound").write_bytes(b"a file where the directory should be")
    store = LocalRawStore(tmp_path)
    with pytest.raises(FileExistsError):
        await store.put("inbound/inb_2.eml", b"x")
    assert _names(tmp_path) == ["inbound"]


async def test_static_routing_normalises_domains() -> None:
    routing = StaticRouting({"acme.test": "u1"})
    assert await routing.owner("acme.test.") == "u1"
    assert await routing.owner("other.test") is None
