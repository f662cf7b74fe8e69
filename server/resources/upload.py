"""The upload group: preview an uploaded CSV or Excel file (structure, column types, the guessed
field mapping, sample rows, row errors) before importing it. Free; nothing is stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.uploads import Upload, received_file
from server.errors import ApiError, InvalidRequest, RequestTooLarge
from server.http.keyed import KeyedContext
from server.resources._common import json_response
from server.tabular import (
    FIELDS,
    Limits,
    Preview,
    Table,
    TabularError,
    check_xlsx,
    open_table,
    preview,
    sheet_records,
    workbook_sheets,
)
from server.tabular.shape import assemble
from server.tabular.xlsxread import SheetInfo

__all__ = [
    "ExcelPreview",
    "UploadForm",
    "UploadPreview",
    "excel_preview",
    "tabular_error",
    "upload_preview",
]

SAMPLE_DEFAULT = 10
SAMPLE_MAX = 100
SCAN_ROWS = 1000
SHEET_SCAN_ROWS = 200


class UploadForm(BaseModel):
    """multipart/form-data: the file in the ``file`` part (CSV, TSV or .xlsx)."""

    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(description="The CSV or .xlsx file (at most BAVLIO_UPLOAD_MAX_BYTES).")


class ColumnInfo(BaseModel):
    """A column: its name, position, guessed type and sample values."""

    name: str
    index: int
    type: Literal["email", "linkedin_url", "url", "domain", "phone", "number", "date", "text"]
    type_confidence: float = Field(description="Share of non-empty scanned values of this type.")
    non_empty: int = Field(description="Non-empty values among the scanned rows.")
    samples: list[str] = Field(description="Up to 3 non-empty values.")


class FieldGuess(BaseModel):
    """A contact field and the column guessed to hold it."""

    field: Literal["email", "first_name", "last_name", "full_name", "company", "domain", "linkedin"]
    column: str
    confidence: float


class SampleRow(BaseModel):
    """A data row: its line in the file (CSV) or row number (sheet), and its values."""

    line: int
    values: dict[str, str]


class RowProblem(BaseModel):
    """A row that could not be read (it would be reported, not imported)."""

    line: int
    reason: str


class TableShape(BaseModel):
    """What a table looks like from its first rows."""

    header_line: int = Field(description="Line (row) of the header; earlier ones are skipped.")
    skipped_lines: list[int]
    columns: list[ColumnInfo]
    mapping: list[FieldGuess]
    suggested_mapping: dict[str, str | None] = Field(
        description="Field -> column (null when no column fits)."
    )
    sample_rows: list[SampleRow]
    row_errors: list[RowProblem] = Field(description="Row errors among the scanned rows (≤ 50).")
    rows_scanned: int
    scan_complete: bool = Field(description="The scan reached the end of the table.")
    blank_rows: int


class UploadPreview(TableShape):
    """The preview of an uploaded file."""

    filename: str
    size_bytes: int
    kind: Literal["csv", "xlsx"]
    encoding: str | None = Field(description="CSV: utf-8, utf-8-sig, utf-16 or cp1252.")
    delimiter: str | None = Field(description="CSV: one of , ; tab |.")
    sheet: str | None = Field(description="xlsx: the sheet previewed.")
    sheets: list[str] = Field(description="xlsx: every worksheet.")


class SheetError(BaseModel):
    """Why a sheet cannot be imported."""

    code: str
    message: str


class SheetPreview(BaseModel):
    """One worksheet: its metadata, and its shape unless it cannot be read (``error``)."""

    name: str
    index: int
    visible: bool
    row_count: int = Field(description="Rows in the sheet's used range (header included).")
    column_count: int
    shape: TableShape | None
    error: SheetError | None


class ExcelPreview(BaseModel):
    """Every worksheet of an uploaded workbook."""

    filename: str
    size_bytes: int
    sheet_count: int
    sheets: list[SheetPreview]


def tabular_error(exc: TabularError) -> ApiError:
    """A refused file as the API's error (413 for the size refusals)."""
    kind = RequestTooLarge if exc.too_large else InvalidRequest
    return kind(exc.code, exc.message, param="file")


def _sample_size(request: Request) -> int:
    raw = request.query_params.get("sample_rows")
    if raw is None:
        return SAMPLE_DEFAULT
    if not raw.isdigit() or not 1 <= int(raw) <= SAMPLE_MAX:
        raise InvalidRequest(
            "parameter_invalid",
            f"sample_rows must be an integer from 1 to {SAMPLE_MAX}.",
            param="sample_rows",
        )
    return int(raw)


def _shape(table: Table, seen: Preview) -> TableShape:
    samples: dict[str, list[str]] = {name: [] for name in seen.columns}
    for row in seen.rows:
        for name, value in row.values.items():
            if value.strip() and len(samples[name]) < 3:
                samples[name].append(value[:200])
    guessed = {g.field: g.column for g in seen.fields}
    return TableShape(
        header_line=table.header_line,
        skipped_lines=seen.skipped_lines[:100],
        columns=[
            ColumnInfo(
                name=name,
                index=index,
                type=seen.types[name].type,
                type_confidence=seen.types[name].confidence,
                non_empty=seen.types[name].non_empty,
                samples=samples[name],
            )
            for index, name in enumerate(seen.columns)
        ],
        mapping=[
            FieldGuess(field=g.field, column=g.column, confidence=g.confidence) for g in seen.fields
        ],
        suggested_mapping={field: guessed.get(field) for field in FIELDS},
        sample_rows=[SampleRow(line=r.line, values=r.values) for r in seen.rows],
        row_errors=[RowProblem(line=e.line, reason=e.reason) for e in seen.errors],
        rows_scanned=seen.rows_scanned,
        scan_complete=seen.complete,
        blank_rows=seen.blank_rows,
    )


def _preview_file(upload: Upload, sheet: str | None, sample: int, limits: Limits) -> UploadPreview:
    with open_table(upload.path, upload.filename, sheet=sheet, limits=limits) as table:
        seen = preview(table, sample=sample, scan=SCAN_ROWS)
        shape = _shape(table, seen)
    return UploadPreview(
        filename=upload.filename,
        size_bytes=upload.size,
        kind=table.kind,
        encoding=table.encoding,
        delimiter=table.delimiter,
        sheet=table.sheet,
        sheets=table.sheets,
        **shape.model_dump(),
    )


def _limits(ctx: KeyedContext) -> Limits:
    return Limits(max_bytes=ctx.services.settings.upload_max_bytes)


async def upload_preview(request: Request, ctx: KeyedContext) -> Response:
    """Preview a CSV (any of the usual encodings and delimiters) or .xlsx file sent as
    multipart/form-data in ``file``: columns with guessed types, the guessed email/name/company/
    domain/LinkedIn columns, sample rows and row errors. ``?sheet=`` picks a worksheet (default:
    the first visible one), ``?sample_rows=`` 1–100 (10). A file refused as a whole is a 400
    (413 for size) with a precise code (file_binary, not_xlsx, zip_bomb, ...)."""
    sample = _sample_size(request)
    sheet = request.query_params.get("sheet")
    if sheet is not None and not 1 <= len(sheet) <= 31:
        raise InvalidRequest(
            "parameter_invalid", "sheet must be 1 to 31 characters.", param="sheet"
        )
    limits = _limits(ctx)
    async with received_file(request, limits.max_bytes) as upload:
        try:
            result = await asyncio.to_thread(_preview_file, upload, sheet, sample, limits)
        except TabularError as exc:
            raise tabular_error(exc) from None
    return json_response(result)


def _sheet_preview(
    path: Path, index: int, info: SheetInfo, sample: int, limits: Limits
) -> SheetPreview:
    try:
        height, width, records = sheet_records(path, info.name, limits)
    except TabularError as exc:
        return SheetPreview(
            name=info.name,
            index=index,
            visible=info.visible,
            row_count=0,
            column_count=0,
            shape=None,
            error=SheetError(code=exc.code, message=exc.message),
        )
    stats: dict[str, int] = {"blank_rows": 0}
    try:
        columns, header_line, skipped, rows = assemble(records, limits, stats)
        table = Table(
            kind="xlsx",
            columns=columns,
            rows=rows,
            header_line=header_line,
            sheet=info.name,
            skipped_lines=skipped,
            stats=stats,
        )
        shape: TableShape | None = _shape(
            table, preview(table, sample=sample, scan=SHEET_SCAN_ROWS)
        )
        error = None
    except TabularError as exc:
        shape, error = None, SheetError(code=exc.code, message=exc.message)
    return SheetPreview(
        name=info.name,
        index=index,
        visible=info.visible,
        row_count=height,
        column_count=width,
        shape=shape,
        error=error,
    )


def _excel_file(upload: Upload, sample: int, limits: Limits) -> ExcelPreview:
    if upload.size == 0:
        raise TabularError("file_empty", "The file is empty.")
    check_xlsx(upload.path, limits)
    sheets = workbook_sheets(upload.path, limits)
    return ExcelPreview(
        filename=upload.filename,
        size_bytes=upload.size,
        sheet_count=len(sheets),
        sheets=[
            _sheet_preview(upload.path, i, info, sample, limits) for i, info in enumerate(sheets)
        ],
    )


async def excel_preview(request: Request, ctx: KeyedContext) -> Response:
    """Preview every worksheet of an .xlsx file sent as multipart/form-data in ``file``: name,
    visibility, size, and each sheet's columns, guessed mapping and sample rows (a sheet that
    cannot be read carries an ``error`` instead). ``?sample_rows=`` 1–100 (10). Legacy .xls,
    macro-enabled workbooks, zip bombs and non-xlsx files are refused with precise codes."""
    sample = _sample_size(request)
    limits = _limits(ctx)
    async with received_file(request, limits.max_bytes) as upload:
        suffix = Path(upload.filename).suffix.lower()
        try:
            if suffix in (".xlsm", ".xltm", ".xlam"):
                raise TabularError(
                    "xlsm_not_supported", "Macro-enabled workbooks are not accepted; save as .xlsx."
                )
            result = await asyncio.to_thread(_excel_file, upload, sample, limits)
        except TabularError as exc:
            raise tabular_error(exc) from None
    return json_response(result)
