"""Streamed dataset downloads as CSV, Excel (.xlsx) or JSON: each writer turns a header and an
async stream of rows into an async stream of bytes in constant memory.

CSV and Excel come from server.tabular's writers (sync generators, run in the thread pool; the
rows are pulled from the database on the event loop a batch at a time); cells that would start a
formula are neutralised in both. JSON is written here: an object with the headers in order and
one object per row, values keeping their JSON types (a risk score stays a number).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
from starlette.concurrency import iterate_in_threadpool

from server.datasets.rules import neutralise
from server.tabular.writers import XLSX_MAX_ROWS, csv_chunks, xlsx_chunks

__all__ = [
    "FORMATS",
    "PULL_BATCH",
    "XLSX_MAX_ROWS",
    "Format",
    "Writer",
    "cell_text",
    "write_csv",
    "write_json",
    "write_xlsx",
]

Writer = Callable[[Sequence[str], AsyncIterator[Sequence[Any]]], AsyncIterator[bytes]]
"""``writer(headers, rows)``: the file's bytes, chunk by chunk."""

FLUSH_BYTES = 64 * 1024
PULL_BATCH = 500
"""Rows a thread-pool writer takes from the event loop per hop."""


def cell_text(value: Any) -> str:
    """A cell as text: empty for None, ``true``/``false``, numbers as written, JSON for
    lists and objects."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _in_threads(
    write: Callable[[Iterable[Sequence[str]]], Iterator[bytes]],
    rows: AsyncIterator[Sequence[Any]],
    cell: Callable[[Any], str],
) -> AsyncIterator[bytes]:
    """Run a sync writer in the thread pool over ``rows``, pulled from the event loop
    :data:`PULL_BATCH` at a time (the writer's memory bound holds: one batch in flight)."""

    async def batch() -> list[list[str]]:
        out: list[list[str]] = []
        async for row in rows:
            out.append([cell(value) for value in row])
            if len(out) >= PULL_BATCH:
                break
        return out

    def pulled() -> Iterator[Sequence[str]]:
        while page := anyio.from_thread.run(batch):
            yield from page

    async for chunk in iterate_in_threadpool(write(pulled())):
        yield chunk


async def write_csv(
    headers: Sequence[str], rows: AsyncIterator[Sequence[Any]]
) -> AsyncIterator[bytes]:
    """RFC 4180 CSV in UTF-8 (CRLF line ends; server.tabular quotes and neutralises)."""
    async for chunk in _in_threads(lambda r: csv_chunks(headers, r), rows, cell_text):
        yield chunk


def _safe_text(value: Any) -> str:
    return neutralise(cell_text(value))


async def write_xlsx(
    headers: Sequence[str], rows: AsyncIterator[Sequence[Any]]
) -> AsyncIterator[bytes]:
    """A one-sheet workbook of text cells (server.tabular, through a temporary file), formula
    cells neutralised like CSV's. The caller checks the row count against
    :data:`XLSX_MAX_ROWS` first."""
    safe = [neutralise(h) for h in headers]
    async for chunk in _in_threads(lambda r: xlsx_chunks(safe, r, sheet="Data"), rows, _safe_text):
        yield chunk


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


async def write_json(
    headers: Sequence[str], rows: AsyncIterator[Sequence[Any]]
) -> AsyncIterator[bytes]:
    """``{"columns": [...], "data": [{header: value}, ...]}``: the headers in order, then the
    rows as objects (values keep their JSON types; no neutralising: JSON is not opened by a
    spreadsheet)."""
    head = json.dumps(list(headers), ensure_ascii=False)
    parts: list[str] = ['{"columns": ', head, ', "data": [']
    size = len(head)
    first = True
    async for row in rows:
        item = {h: _json_value(v) for h, v in zip(headers, row, strict=False)}
        text = ("" if first else ",") + "\n" + json.dumps(item, ensure_ascii=False)
        first = False
        parts.append(text)
        size += len(text)
        if size >= FLUSH_BYTES:
            yield "".join(parts).encode("utf-8")
            parts, size = [], 0
    parts.append("\n]}\n")
    yield "".join(parts).encode("utf-8")


@dataclass(frozen=True)
class Format:
    """A download format: its writer, media type and file extension."""

    writer: Writer
    media_type: str
    extension: str


FORMATS: dict[str, Format] = {
    "csv": Format(write_csv, "text/csv; charset=utf-8", "csv"),
    "excel": Format(
        write_xlsx,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
    ),
    "json": Format(write_json, "application/json", "json"),
}
"""``format=`` values of the download route (``xlsx`` is accepted for ``excel``)."""
