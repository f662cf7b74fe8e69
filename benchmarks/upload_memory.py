"""Upload pipeline throughput and memory: rows/s and peak traced memory (tracemalloc) of the CSV
reader, and of reader -> writer (CSV, JSON, xlsx), for 10k and 100k generated rows.

    python -m benchmarks.upload_memory [--rows 10000,100000]

Peak memory should not grow with the row count (everything streams); xlsx reading is left out
(calamine loads a sheet at once: bounded by the upload size, not streamed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from server.tabular import Row, csv_chunks, json_chunks, open_table, xlsx_chunks

COLUMNS = ["email", "first_name", "last_name", "company", "domain", "linkedin", "note"]


def make_csv(path: Path, rows: int) -> None:
    """A realistic contact list: ASCII and accents, quoted commas and newlines."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(COLUMNS) + "\r\n")
        for i in range(rows):
            note = '"met at fair, booth 12\nfollow up"' if i % 10 == 0 else f"lead {i}"
            out.write(
                f"user{i}@acme{i % 97}.test,Zoë{i % 13},Müller{i % 7},Acme {i % 97} GmbH,"
                f"acme{i % 97}.test,https://www.linkedin.com/in/user-{i},{note}\r\n"
            )


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    with open_table(path, "contacts.csv") as table:
        for item in table.rows:
            if isinstance(item, Row):
                yield item.values


def drain(chunks: Iterator[bytes]) -> int:
    return sum(len(chunk) for chunk in chunks)


def measure(label: str, rows: int, run: Callable[[], int]) -> tuple[float, float]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # a second, untraced run for the speed (tracemalloc slows allocation-heavy code)
    started = time.perf_counter()
    run()
    untraced = time.perf_counter() - started
    print(
        f"{label:<22} {rows:>8,} rows  {rows / untraced:>10,.0f} rows/s  "
        f"peak {peak / 1024 / 1024:6.2f} MiB  (traced run {elapsed:.1f} s)"
    )
    return rows / untraced, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="10000,100000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for rows in (int(n) for n in args.rows.split(",")):
            path = Path(work) / f"contacts-{rows}.csv"
            make_csv(path, rows)
            size = path.stat().st_size
            print(f"-- {rows:,} rows, {size / 1024 / 1024:.1f} MiB CSV")
            measure("read csv", rows, lambda p=path: sum(1 for _ in read_rows(p)))
            measure(
                "csv -> csv (bom)",
                rows,
                lambda p=path: drain(csv_chunks(COLUMNS, read_rows(p), bom=True)),
            )
            measure("csv -> json", rows, lambda p=path: drain(json_chunks(COLUMNS, read_rows(p))))
            measure("csv -> xlsx", rows, lambda p=path: drain(xlsx_chunks(COLUMNS, read_rows(p))))


if __name__ == "__main__":
    main()
