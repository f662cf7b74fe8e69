"""``open_table``: one entry point for CSV and xlsx files on disk."""

from __future__ import annotations

import os
from pathlib import Path

from server.tabular import csvread, xlsxread
from server.tabular.model import Kind, Limits, Table, TabularError, close_all
from server.tabular.shape import assemble

__all__ = ["CSV_SUFFIXES", "XLSX_SUFFIXES", "kind_of", "open_table"]

CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".tab"})
XLSX_SUFFIXES = frozenset({".xlsx"})
_MACRO_SUFFIXES = frozenset({".xlsm", ".xltm", ".xlam"})
_REFUSED = {
    ".xls": ("xls_not_supported", "Legacy .xls workbooks are not supported; save as .xlsx."),
    ".xlsb": ("xlsb_not_supported", "Binary .xlsb workbooks are not supported; save as .xlsx."),
    ".ods": ("ods_not_supported", "OpenDocument spreadsheets are not supported; save as .xlsx."),
}


def kind_of(path: Path, filename: str | None) -> Kind:
    """The kind from the file name's suffix, else from the content's first bytes."""
    suffix = Path(filename or "").suffix.lower()
    if suffix in _MACRO_SUFFIXES:
        raise TabularError(
            "xlsm_not_supported", "Macro-enabled workbooks are not accepted; save as .xlsx."
        )
    if suffix in _REFUSED:
        raise TabularError(*_REFUSED[suffix])
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in XLSX_SUFFIXES:
        return "xlsx"
    with path.open("rb") as handle:
        magic = handle.read(8)
    if magic.startswith((xlsxread.ZIP_MAGIC, xlsxread.OLE2_MAGIC)):
        return "xlsx"
    return "csv"


def _check_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size == 0:
        raise TabularError("file_empty", "The file is empty.")
    if size > limits.max_bytes:
        raise TabularError(
            "file_too_large",
            f"The file has {size} bytes; at most {limits.max_bytes} are accepted.",
            too_large=True,
        )


def open_table(
    source: str | os.PathLike[str],
    filename: str | None = None,
    *,
    kind: Kind | None = None,
    sheet: str | None = None,
    limits: Limits | None = None,
) -> Table:
    """Open a CSV or xlsx file: its columns now, its rows as a one-pass iterator.

    ``filename`` (the uploaded name) picks the kind unless ``kind`` is given; ``sheet`` picks an
    xlsx worksheet (default: the first visible one). Raises :class:`TabularError` for a file
    refused as a whole; a bad row is a ``RowError`` in ``rows``. Use as a context manager (or
    exhaust ``rows``) so the file is closed.
    """
    limits = limits or Limits()
    path = Path(source)
    _check_size(path, limits)
    kind = kind or kind_of(path, filename)
    if kind == "csv":
        return _open_csv(path, limits)
    return _open_xlsx(path, sheet, limits)


def _open_csv(path: Path, limits: Limits) -> Table:
    closers: list[object] = []
    try:
        encoding, delimiter, records = csvread.records(path, limits, closers)
        stats: dict[str, int] = {"blank_rows": 0}
        columns, header_line, skipped, rows = assemble(records, limits, stats)
    except BaseException:
        close_all(closers)
        raise
    return Table(
        kind="csv",
        columns=columns,
        rows=rows,
        header_line=header_line,
        encoding=encoding,
        delimiter=delimiter,
        skipped_lines=skipped,
        stats=stats,
        _closers=closers,
    )


def _open_xlsx(path: Path, sheet: str | None, limits: Limits) -> Table:
    xlsxread.check_xlsx(path, limits)
    sheets = xlsxread.workbook_sheets(path, limits)
    if not sheets:
        raise TabularError("no_sheets", "The workbook has no worksheet.")
    if sheet is None:
        visible = [info.name for info in sheets if info.visible] or [sheets[0].name]
        sheet = visible[0]
    elif sheet not in {info.name for info in sheets}:
        raise TabularError("sheet_not_found", f"The workbook has no sheet {sheet!r}.")
    _, _, records = xlsxread.sheet_records(path, sheet, limits)
    stats: dict[str, int] = {"blank_rows": 0}
    columns, header_line, skipped, rows = assemble(records, limits, stats)
    return Table(
        kind="xlsx",
        columns=columns,
        rows=rows,
        header_line=header_line,
        sheet=sheet,
        sheets=[info.name for info in sheets],
        skipped_lines=skipped,
        stats=stats,
    )
