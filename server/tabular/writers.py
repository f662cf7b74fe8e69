"""Streamed writers: rows in, chunks of bytes out, in constant memory (sync generators; a
Starlette ``StreamingResponse`` takes them as they are, or through :func:`async_chunks`).

The CSV writer neutralises formula injection: a cell starting with ``=`` ``+`` ``-`` ``@``, tab
or carriage return is written with a leading ``'`` so spreadsheets show it as text. The xlsx
writer writes every cell as a string (never a formula, number or link).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence

import xlsxwriter
from starlette.concurrency import iterate_in_threadpool

from server.tabular.model import TabularError

__all__ = [
    "CHUNK",
    "XLSX_MAX_ROWS",
    "async_chunks",
    "csv_chunks",
    "json_chunks",
    "neutralise",
    "xlsx_chunks",
]

CHUNK = 64 * 1024
XLSX_MAX_ROWS = 1_048_576
_XLSX_MAX_CELL = 32_767
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

RowLike = Mapping[str, object] | Sequence[object]


def neutralise(cell: str) -> str:
    """``cell`` made inert for spreadsheets (a leading ``'`` before a formula-like start)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _cells(row: RowLike, columns: Sequence[str]) -> list[str]:
    if isinstance(row, Mapping):
        return ["" if row.get(name) is None else str(row.get(name)) for name in columns]
    return ["" if value is None else str(value) for value in row]


_NEEDS_QUOTES = frozenset('",;\t|\r\n')


def _csv_field(cell: str) -> str:
    cell = neutralise(cell)
    if _NEEDS_QUOTES.isdisjoint(cell) and cell == cell.strip(" "):
        return cell
    return '"' + cell.replace('"', '""') + '"'


def csv_chunks(
    columns: Sequence[str], rows: Iterable[RowLike], *, bom: bool = False, delimiter: str = ","
) -> Iterator[bytes]:
    """A CSV file (UTF-8, CRLF, a header row; ``bom`` for Excel) in chunks of ~64 KiB. A cell
    holding any of the delimiters a reader may sniff (``,`` ``;`` tab ``|``), a quote, a line
    break or edge spaces is quoted, so the file reads back the same whatever the sniffer picks."""
    parts: list[str] = ["\ufeff"] if bom else []
    parts.append(delimiter.join(_csv_field(name) for name in columns) + "\r\n")
    size = 0
    for row in rows:
        line = delimiter.join(_csv_field(cell) for cell in _cells(row, columns)) + "\r\n"
        parts.append(line)
        size += len(line)
        if size >= CHUNK:
            yield "".join(parts).encode("utf-8")
            parts, size = [], 0
    yield "".join(parts).encode("utf-8")


def json_chunks(columns: Sequence[str], rows: Iterable[RowLike]) -> Iterator[bytes]:
    """A JSON array of objects (column -> string) in chunks of ~64 KiB."""
    parts: list[str] = ["["]
    size = 1
    first = True
    for row in rows:
        item = json.dumps(
            dict(zip(columns, _cells(row, columns), strict=False)), ensure_ascii=False
        )
        parts.append(item if first else "," + item)
        size += len(item) + 1
        first = False
        if size >= CHUNK:
            yield "".join(parts).encode("utf-8")
            parts, size = [], 0
    parts.append("]")
    yield "".join(parts).encode("utf-8")


def xlsx_chunks(
    columns: Sequence[str], rows: Iterable[RowLike], *, sheet: str = "Sheet1"
) -> Iterator[bytes]:
    """An xlsx workbook of one sheet: xlsxwriter in constant-memory mode writes it to a
    temporary file, streamed out afterwards in ~64 KiB chunks (the file is removed at the end).
    A cell longer than Excel's 32,767 characters is cut; TabularError ``too_many_rows`` beyond
    Excel's 1,048,576 rows."""
    handle, path = tempfile.mkstemp(suffix=".xlsx")
    os.close(handle)
    try:
        workbook = xlsxwriter.Workbook(
            path,
            {
                "constant_memory": True,
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "tmpdir": os.path.dirname(path),
            },
        )
        worksheet = workbook.add_worksheet(sheet[:31] or "Sheet1")
        for col, name in enumerate(columns):
            worksheet.write_string(0, col, name[:_XLSX_MAX_CELL])
        line = 0
        for line, row in enumerate(rows, start=1):
            if line >= XLSX_MAX_ROWS:
                workbook.close()
                raise TabularError(
                    "too_many_rows",
                    f"An xlsx sheet holds at most {XLSX_MAX_ROWS - 1} data rows.",
                    too_large=True,
                )
            for col, value in enumerate(_cells(row, columns)):
                if value:
                    worksheet.write_string(line, col, value[:_XLSX_MAX_CELL])
        workbook.close()
        with open(path, "rb") as result:
            while chunk := result.read(CHUNK):
                yield chunk
    finally:
        os.unlink(path)


async def async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Run a sync chunk generator in the thread pool (for async consumers other than Starlette's
    ``StreamingResponse``, which does this itself)."""
    async for chunk in iterate_in_threadpool(chunks):
        yield chunk
