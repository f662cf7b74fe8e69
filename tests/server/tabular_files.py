"""Test files made on the fly: CSV variants and xlsx workbooks, good and hostile."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import xlsxwriter


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def xlsx_bytes(sheets: dict[str, Sequence[Sequence[object]]], hidden: Sequence[str] = ()) -> bytes:
    """A real xlsx workbook (xlsxwriter) with these sheets and rows."""
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_formulas": False})
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
    for name, rows in sheets.items():
        sheet = workbook.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is None:
                    continue
                if hasattr(value, "isoformat") and not isinstance(value, str):
                    sheet.write_datetime(r, c, value, date_format)
                elif isinstance(value, str):
                    sheet.write_string(r, c, value)
                else:
                    sheet.write(r, c, value)
    shown = [sheet for sheet in workbook.worksheets() if sheet.name not in hidden]
    if hidden and shown:
        shown[0].activate()
        shown[0].set_first_sheet()
        for sheet in workbook.worksheets():
            if sheet.name in hidden:
                sheet.hide()
    workbook.close()
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes], level: int = 9) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


MINIMAL_PARTS = {
    "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
    "xl/workbook.xml": b'<?xml version="1.0"?><workbook/>',
}


def zip_bomb() -> bytes:
    """A zip looking like an xlsx whose sheet unpacks 2000:1."""
    return zip_bytes({**MINIMAL_PARTS, "xl/worksheets/sheet1.xml": b"\0" * (8 * 1024 * 1024)})


def xlsm_bytes() -> bytes:
    """A real workbook with a VBA project part added (a macro-enabled workbook)."""
    source = zipfile.ZipFile(io.BytesIO(xlsx_bytes({"Sheet1": [["a"], ["1"]]})))
    entries = {info.filename: source.read(info) for info in source.infolist()}
    entries["xl/vbaProject.bin"] = b"\xd0\xcf\x11\xe0macro"
    return zip_bytes(entries)
