"""Excel reading: the file is checked as a zip before any parser sees it, then read with
python-calamine (Rust). Only ``.xlsx`` is accepted: legacy ``.xls`` (OLE2) and macro-enabled
workbooks are refused, as are zip bombs (declared sizes, entry count, compression ratio, then
every entry decompressed once with its CRC checked, within those bounds).
"""

from __future__ import annotations

import datetime as dt
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import python_calamine

from server.tabular.model import Limits, TabularError
from server.tabular.shape import Record

__all__ = ["SheetInfo", "cell_text", "check_xlsx", "sheet_records", "workbook_sheets"]

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
_RATIO_FLOOR = 1024 * 1024
_MACRO_PARTS = ("xl/vbaproject.bin", "xl/macrosheets/")


@dataclass(frozen=True)
class SheetInfo:
    """A worksheet's name and whether Excel shows it."""

    name: str
    visible: bool


def check_xlsx(path: Path, limits: Limits) -> None:
    """Refuse anything but a plain, bounded xlsx (TabularError with a precise code)."""
    with path.open("rb") as handle:
        magic = handle.read(8)
    if magic.startswith(OLE2_MAGIC):
        raise TabularError(
            "xls_not_supported", "Legacy .xls workbooks are not supported; save as .xlsx."
        )
    if not magic.startswith(ZIP_MAGIC):
        raise TabularError("not_xlsx", "The file is not an Excel .xlsx workbook.")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TabularError("not_xlsx", "The file is not a readable .xlsx (zip) file.") from exc
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_zip_entries:
            raise TabularError(
                "zip_too_many_entries",
                f"The workbook has {len(entries)} zip entries; at most "
                f"{limits.max_zip_entries} are accepted.",
            )
        names = {info.filename.lower() for info in entries}
        if "xl/workbook.xml" not in names or "[content_types].xml" not in names:
            if "xl/workbook.bin" in names:
                raise TabularError(
                    "xlsb_not_supported", "Binary .xlsb workbooks are not supported."
                )
            raise TabularError("not_xlsx", "The zip file is not an Excel .xlsx workbook.")
        if any(name.startswith(_MACRO_PARTS) for name in names):
            raise TabularError(
                "xlsm_not_supported", "Macro-enabled workbooks are not accepted; save as .xlsx."
            )
        total = sum(info.file_size for info in entries)
        if total > limits.max_uncompressed_bytes:
            raise TabularError(
                "zip_uncompressed_too_large",
                f"The workbook unpacks to {total} bytes; at most "
                f"{limits.max_uncompressed_bytes} are accepted.",
                too_large=True,
            )
        for info in entries:
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR and ratio > limits.max_compression_ratio:
                raise TabularError(
                    "zip_bomb",
                    f"A workbook part compresses {ratio:.0f}:1 (a zip bomb); at most "
                    f"{limits.max_compression_ratio}:1 is accepted.",
                )
        _verify_entries(archive, entries, limits)
        content_types = archive.read("[Content_Types].xml")[: 1024 * 1024].lower()
        if b"macroenabled" in content_types:
            raise TabularError(
                "xlsm_not_supported", "Macro-enabled workbooks are not accepted; save as .xlsx."
            )


def _verify_entries(
    archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], limits: Limits
) -> None:
    """Decompress every entry once (bounded by its declared size; CRC checked)."""
    seen = 0
    for info in entries:
        try:
            with archive.open(info) as member:
                while chunk := member.read(1024 * 1024):
                    seen += len(chunk)
                    if seen > limits.max_uncompressed_bytes:
                        raise TabularError(
                            "zip_uncompressed_too_large",
                            "The workbook unpacks to more than its declared size allows.",
                            too_large=True,
                        )
        except TabularError:
            raise
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
            RuntimeError,
            zlib.error,
        ) as exc:
            raise TabularError("xlsx_corrupt", "The workbook's zip data is corrupt.") from exc


def _workbook(path: Path) -> python_calamine.CalamineWorkbook:
    try:
        return python_calamine.CalamineWorkbook.from_path(str(path))
    except python_calamine.PasswordError as exc:
        raise TabularError("xlsx_encrypted", "The workbook is password-protected.") from exc
    except Exception as exc:  # calamine's errors: XmlError, ZipError, CalamineError, ...
        raise TabularError("xlsx_corrupt", "The workbook could not be read.") from exc


def workbook_sheets(path: Path, limits: Limits) -> list[SheetInfo]:
    """The worksheets of a checked xlsx, in workbook order (charts and macro sheets left out)."""
    workbook = _workbook(path)
    try:
        sheets = [
            SheetInfo(meta.name, meta.visible == python_calamine.SheetVisibleEnum.Visible)
            for meta in workbook.sheets_metadata
            if meta.typ == python_calamine.SheetTypeEnum.WorkSheet
        ]
    finally:
        workbook.close()
    if len(sheets) > limits.max_sheets:
        raise TabularError(
            "too_many_sheets",
            f"The workbook has {len(sheets)} sheets; at most {limits.max_sheets}.",
        )
    return sheets


def cell_text(value: object) -> str:
    """One cell as text, the same way for every workbook: integral numbers without ``.0``, other
    floats as Python's shortest repr, booleans ``TRUE``/``FALSE``, dates ISO ``YYYY-MM-DD``,
    date-times ``YYYY-MM-DD HH:MM:SS``, times ``HH:MM:SS``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0, tzinfo=None).isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, dt.timedelta):
        seconds = int(value.total_seconds())
        sign = "-" if seconds < 0 else ""
        hours, rest = divmod(abs(seconds), 3600)
        return f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return str(value)


def sheet_records(path: Path, sheet: str, limits: Limits) -> tuple[int, int, Iterator[Record]]:
    """(rows, columns, raw records) of one sheet of a checked xlsx; line = the sheet row."""
    workbook = _workbook(path)
    try:
        try:
            data = workbook.get_sheet_by_name(sheet)
        except python_calamine.WorksheetNotFound as exc:
            raise TabularError("sheet_not_found", f"The workbook has no sheet {sheet!r}.") from exc
        except Exception as exc:
            raise TabularError("xlsx_corrupt", f"Sheet {sheet!r} could not be read.") from exc
    finally:
        workbook.close()
    start = data.start
    first_row = (start[0] if start else 0) + 1
    first_col = start[1] if start else 0
    height, width = data.height, data.width
    if width + first_col > limits.max_columns:
        raise TabularError(
            "too_many_columns",
            f"Sheet {sheet!r} has {width + first_col} columns; at most {limits.max_columns}.",
        )

    def iterate() -> Iterator[Record]:
        for offset, row in enumerate(data.iter_rows()):
            cells = [""] * first_col + [cell_text(value) for value in row]
            while cells and not cells[-1]:
                cells.pop()
            yield (first_row + offset, cells)

    return height, width, iterate()
