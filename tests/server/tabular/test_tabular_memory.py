"""Streaming holds: 100,000 CSV rows through reader -> CSV writer stay under a memory ceiling
that does not depend on the row count (tracemalloc peaks; no timing assertions)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from server.tabular import Row, csv_chunks, json_chunks, open_table

COLUMNS = ["email", "first_name", "last_name", "company", "note"]
CEILING = 8 * 1024 * 1024
"""Generous: the reader's 256 KiB read buffers, a 64 KiB output chunk, the interpreter's noise."""


def _make(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(COLUMNS) + "\r\n")
        for i in range(rows):
            note = '"a, b\nc"' if i % 10 == 0 else f"n{i}"
            out.write(f"u{i}@acme.test,Zoë,Müller,Acme {i % 97},{note}\r\n")


def _pipe(path: Path, writer: str) -> tuple[int, int, int]:
    """(rows read, bytes written, peak traced bytes) of reader -> writer."""
    tracemalloc.start()
    try:
        count = 0
        with open_table(path, "in.csv") as table:

            def rows() -> Iterator[dict[str, str]]:
                nonlocal count
                for item in table.rows:
                    assert isinstance(item, Row)
                    count += 1
                    yield item.values

            chunks = (csv_chunks if writer == "csv" else json_chunks)(table.columns, rows())
            written = sum(len(chunk) for chunk in chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, written, peak


def test_100k_rows_stream_in_constant_memory(tmp_path: Path) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    _make(small, 30_000)
    _make(large, 100_000)
    rows_small, _, peak_small = _pipe(small, "csv")
    rows_large, written, peak_large = _pipe(large, "csv")
    assert (rows_small, rows_large) == (30_000, 100_000)
    assert written > large.stat().st_size * 0.9  # everything went through
    assert peak_large < CEILING
    assert peak_large < peak_small * 1.5 + 512 * 1024  # 3.3 times the rows, the same memory


def test_json_writer_streams_too(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    _make(path, 30_000)
    rows, written, peak = _pipe(path, "json")
    assert rows == 30_000
    assert written > 0
    assert peak < CEILING
