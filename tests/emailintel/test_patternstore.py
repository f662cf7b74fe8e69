"""The finder's pattern stores: in memory and an SQLite file shared by processes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailintel.errors import ConfigError
from emailintel.patternstore import (
    MemoryPatternStore,
    PatternStore,
    PatternStoreError,
    SqlitePatternStore,
    pattern_store_from_env,
)

ADDS = st.lists(
    st.tuples(
        st.sampled_from(["a.test", "b.test", "c.test"]),
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.sampled_from(["Ann Lee", "Bob Roe"]),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(adds=ADDS)
def test_the_sqlite_file_keeps_what_memory_keeps(
    tmp_path_factory: pytest.TempPathFactory, adds: list[tuple[str, str, str]]
) -> None:
    """Same bounds, same adds, no reads between: both keep the newest pairs of the newest domains."""
    path = tmp_path_factory.mktemp("store") / "p.sqlite3"

    async def run() -> None:
        memory = MemoryPatternStore(max_domains=2, per_domain=2)
        disk = SqlitePatternStore(path, max_domains=2, per_domain=2)
        for domain, local, name in adds:
            await memory.add(domain, f"{local}@{domain}", name)
            await disk.add(domain, f"{local}@{domain}", name)
        for domain in ("a.test", "b.test", "c.test"):
            assert await disk.known(domain) == await memory.known(domain)
        assert await disk.domains() == len(memory)

    asyncio.run(run())


async def test_sqlite_store_bounds_and_normalises(tmp_path: Path) -> None:
    store = SqlitePatternStore(tmp_path / "p.sqlite3", max_domains=2, per_domain=2)
    for i in range(3):
        await store.add("A.Test", f"u{i}@a.test", f"U {i}")
    await store.add("a.test", "u1@a.test", "U One")  # a repeat refreshes it, latest name wins
    assert await store.known("a.test") == [("u2@a.test", "U 2"), ("u1@a.test", "U One")]
    await store.add("b.test", "x@b.test", "X Y")
    await store.add("c.test", "z@c.test", "Z Q")  # a.test was confirmed longest ago: it goes
    assert await store.known("a.test") == []
    assert await store.domains() == 2
    await store.add("b.test", "y@b.test", "N" * 500)
    assert [len(name) for _, name in await store.known("b.test")] == [3, 200]
    with pytest.raises(ConfigError):
        await store.add("b.test", "x" * 400 + "@b.test", "X")
    with pytest.raises(ConfigError):
        SqlitePatternStore(tmp_path / "q", per_domain=0)
    with pytest.raises(ConfigError):
        SqlitePatternStore(tmp_path / "q", timeout=0)


async def test_an_unusable_file_raises_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(PatternStoreError):
        await SqlitePatternStore(tmp_path).known("a.test")  # a directory
    with pytest.raises(PatternStoreError):
        await SqlitePatternStore(tmp_path / "missing" / "p.sqlite3").add("a.test", "u@a.test", "U")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(PatternStoreError):
        await SqlitePatternStore(garbage).add("a.test", "u@a.test", "U")
    # A foreign table of the same name: reads and writes fail typed, not with sqlite3's errors.
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE pattern_confirmed (x INTEGER)")
    store = SqlitePatternStore(foreign)
    with pytest.raises(PatternStoreError):
        await store.known("a.test")
    with pytest.raises(PatternStoreError):
        await store.add("a.test", "u@a.test", "U")
    # A table dropped under a store that already set the file up.
    with sqlite3.connect(foreign) as conn:
        conn.execute("DROP TABLE pattern_domains")
    with pytest.raises(PatternStoreError):
        await store.domains()


_WRITER = """
import asyncio, sys
from emailintel.patternstore import SqlitePatternStore
async def main():
    store = SqlitePatternStore(sys.argv[1], per_domain=1000)
    for i in range(int(sys.argv[3])):
        await store.add("shared.test", f"{sys.argv[2]}{i}@shared.test", f"W {i}")
asyncio.run(main())
"""


def test_several_processes_write_one_file(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), f"w{n}-", "40"])
        for n in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    known = asyncio.run(SqlitePatternStore(path, per_domain=1000).known("shared.test"))
    assert len(known) == 160
    assert len({address for address, _ in known}) == 160


def test_the_environment_picks_the_store(tmp_path: Path) -> None:
    assert isinstance(pattern_store_from_env({}), MemoryPatternStore)
    assert isinstance(
        pattern_store_from_env({"EMAILINTEL_PATTERN_CACHE": "  "}), MemoryPatternStore
    )
    chosen = pattern_store_from_env({"EMAILINTEL_PATTERN_CACHE": str(tmp_path / "p.sqlite3")})
    assert isinstance(chosen, SqlitePatternStore)
    assert chosen.path == tmp_path / "p.sqlite3"
    assert isinstance(chosen, PatternStore)
    assert isinstance(MemoryPatternStore(), PatternStore)
