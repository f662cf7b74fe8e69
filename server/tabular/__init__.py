"""Uploaded tables (CSV, xlsx) read as streams of rows, previews, and streamed writers.

No database, no HTTP: files on disk in, Python values out. The API::

    open_table(path, filename=None, *, kind=None, sheet=None, limits=Limits()) -> Table
        Table.columns: list[str]   unique, non-empty header names
        Table.rows: Iterator[Row | RowError]   one pass; nothing dropped silently
        Table.kind ("csv" | "xlsx"), encoding, delimiter, sheet, sheets, header_line,
        skipped_lines (blank/title lines before the header), stats["blank_rows"]
        use ``with open_table(...) as table:`` so the file is closed
    Row(line, values: dict[str, str])      RowError(line, reason)
    TabularError(code, message, too_large=bool)   the whole file refused; ``code`` is stable
    Limits(max_bytes, max_columns, max_cell_chars, max_rows, max_row_errors, ... zip bounds)
    workbook_sheets(path, limits) -> [SheetInfo(name, visible)]   after check_xlsx(path, limits)
    preview(table, sample=10, scan=1000) -> Preview(columns, types, fields, rows, errors, ...)
    value_type(str), column_type(values) -> ColumnGuess(type, confidence, non_empty),
    guess_fields(columns, types) -> [FieldGuess(field, column, confidence)]
    csv_chunks(columns, rows, bom=False), json_chunks(columns, rows),
    xlsx_chunks(columns, rows, sheet="Sheet1") -> Iterator[bytes]   constant memory;
    rows are mappings (column -> value) or sequences; async_chunks(it) -> AsyncIterator[bytes]
    neutralise(cell) -> the CSV-injection-safe cell

Reading rules (header detection, ragged rows, encodings, what xlsx files are refused) are in the
docstrings of ``shape``, ``csvread`` and ``xlsxread``. Error codes: file_empty, file_too_large,
file_binary, file_encoding_unknown, line_too_long, no_header, too_many_columns,
header_too_long, too_many_rows, too_many_row_errors, not_xlsx, xls_not_supported,
xlsm_not_supported, xlsb_not_supported, ods_not_supported, zip_too_many_entries,
zip_uncompressed_too_large, zip_bomb, xlsx_corrupt, xlsx_encrypted, no_sheets,
sheet_not_found, too_many_sheets. Row error reasons start with too_many_cells, cell_too_large
or malformed_csv.
"""

from __future__ import annotations

from server.tabular.guess import (
    FIELDS,
    ColumnGuess,
    FieldGuess,
    ValueType,
    column_type,
    guess_fields,
    value_type,
)
from server.tabular.model import Kind, Limits, Row, RowError, Table, TabularError
from server.tabular.preview import Preview, preview
from server.tabular.reader import kind_of, open_table
from server.tabular.writers import async_chunks, csv_chunks, json_chunks, neutralise, xlsx_chunks
from server.tabular.xlsxread import SheetInfo, check_xlsx, sheet_records, workbook_sheets

__all__ = [
    "FIELDS",
    "ColumnGuess",
    "FieldGuess",
    "Kind",
    "Limits",
    "Preview",
    "Row",
    "RowError",
    "SheetInfo",
    "Table",
    "TabularError",
    "ValueType",
    "async_chunks",
    "check_xlsx",
    "column_type",
    "csv_chunks",
    "guess_fields",
    "json_chunks",
    "kind_of",
    "neutralise",
    "open_table",
    "preview",
    "sheet_records",
    "value_type",
    "workbook_sheets",
    "xlsx_chunks",
]
