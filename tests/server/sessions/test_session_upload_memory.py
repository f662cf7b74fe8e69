"""An upload's rows stream from the reader into the dataset (the session upload's row
generator into DatasetStore.append): 100,000 rows stay under a memory ceiling that does not
grow with the row count (tracemalloc peaks, both backends; no timing assertions)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from server.auth.store import AccountStore
from server.datasets.store import DatasetStore
from server.db.engine import Database
from server.resources.session_uploads import RejectedRow, table_rows
from server.tabular import open_table

CEILING = 16 * 1024 * 1024
"""Generous: read buffers, one 1,000-row INSERT batch, the drivers' and interpreter's noise."""


def _make(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,first_name,last_name,company\r\n")
        for i in range(rows):
            out.write(f"u{i}@acme.test,Zoë,Müller,Acme {i % 97}\r\n")
            if i % 25_000 == 0:
                out.write("bad,row,with,too,many\r\n")


async def _import(store: DatasetStore, user: str, path: Path) -> tuple[int, int, int]:
    """(rows added, rows rejected, peak traced bytes) of one file into a new dataset."""
    dataset = await store.create(
        user, name=path.name, source_type="csv", pipeline_type="enrichment", columns=[]
    )
    rejected: list[RejectedRow] = []
    tracemalloc.start()
    try:
        with open_table(path, path.name) as table:
            added = await store.append(dataset.id, table_rows(table, None, rejected))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return added, len(rejected), peak


async def test_100k_row_upload_streams_in_flat_memory(db: Database, tmp_path: Path) -> None:
    user, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        "ann", email="ann@x.test", plan="paid"
    )
    store = DatasetStore(db.engine)
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    _make(small, 10_000)
    _make(large, 100_000)
    added_small, bad_small, peak_small = await _import(store, user.id, small)
    added_large, bad_large, peak_large = await _import(store, user.id, large)
    assert (added_small, bad_small) == (10_000, 1)
    assert (added_large, bad_large) == (100_000, 4)
    print(f"peak traced: 10k rows {peak_small / 1e6:.1f} MB, 100k rows {peak_large / 1e6:.1f} MB")
    assert peak_large < CEILING
    assert peak_large < peak_small * 1.5 + 1024 * 1024  # ten times the rows, the same memory
