"""Streamed dataset downloads as CSV, Excel (.xlsx) or JSON: each writer turns a header and an
async stream of rows into an async stream of bytes, holding one chunk at a time (memory stays
flat whatever the dataset's size).

The writer interface is :data:`Writer`; server.tabular's writers can replace these behind it.
CSV and Excel cells that would start a formula are neutralised (:func:`rules.neutralise`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from server.datasets.rules import neutralise

__all__ = [
    "FORMATS",
    "XLSX_MAX_CELL",
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
XLSX_MAX_ROWS = 1_048_576
"""Excel's row limit (the header included); rows beyond are not written."""
XLSX_MAX_CELL = 32_767
"""Excel's limit of characters in a cell; longer text is cut."""


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


async def write_csv(
    headers: Sequence[str], rows: AsyncIterator[Sequence[Any]]
) -> AsyncIterator[bytes]:
    """RFC 4180 CSV in UTF-8 (CRLF line ends, quoted when needed), formula cells neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(h) for h in headers])
    async for row in rows:
        writer.writerow([neutralise(cell_text(v)) for v in row])
        if buffer.tell() >= FLUSH_BYTES:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


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


class _Sink(io.RawIOBase):
    """A write-only, unseekable file collecting what the zip writer produces until drained."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks = []
        return out


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/></Relationships>'
)
_SHEET_START = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
)
_SHEET_END = "</sheetData></worksheet>"

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _xlsx_cell(ref: str, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    text = _XML_ILLEGAL.sub("", neutralise(cell_text(value)))[:XLSX_MAX_CELL]
    if not text:
        return ""
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(text)}</t></is></c>'


def _xlsx_row(number: int, letters: Sequence[str], values: Sequence[Any]) -> str:
    cells = "".join(
        _xlsx_cell(f"{letters[i]}{number}", value) for i, value in enumerate(values[: len(letters)])
    )
    return f'<row r="{number}">{cells}</row>'


async def write_xlsx(
    headers: Sequence[str], rows: AsyncIterator[Sequence[Any]]
) -> AsyncIterator[bytes]:
    """A one-sheet workbook with inline strings, zipped as it is written (the sheet's size is
    not known up front, so its entry uses a data descriptor and ZIP64)."""
    sink = _Sink()
    letters = [_column_letters(i) for i in range(len(headers))]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as book:
        book.writestr("[Content_Types].xml", _CONTENT_TYPES)
        book.writestr("_rels/.rels", _RELS)
        book.writestr("xl/workbook.xml", _WORKBOOK)
        book.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        with book.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write((_SHEET_START + _xlsx_row(1, letters, list(headers))).encode("utf-8"))
            number = 1
            pending: list[str] = []
            size = 0
            async for row in rows:
                if number >= XLSX_MAX_ROWS:
                    break
                number += 1
                text = _xlsx_row(number, letters, row)
                pending.append(text)
                size += len(text)
                if size >= FLUSH_BYTES:
                    sheet.write("".join(pending).encode("utf-8"))
                    pending, size = [], 0
                    chunk = sink.drain()
                    if chunk:
                        yield chunk
            sheet.write(("".join(pending) + _SHEET_END).encode("utf-8"))
    yield sink.drain()


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
