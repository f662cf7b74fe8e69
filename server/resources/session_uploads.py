"""Uploads into a session: a CSV or .xlsx file (multipart ``file``) read as a stream of rows
into the session's dataset; every row that cannot be read is reported with its line and
reason. The file itself is kept in file storage under the session (removed with it).

Form fields besides ``file``: ``sender_profile_id`` (use a saved sender profile),
``sender_data`` (a JSON object merged into the session's sender data: a new profile inline),
``sender_columns`` (comma-separated columns holding per-row sender data, recorded in the
dataset's mapping), and for Excel ``sheets`` (comma-separated names, or ``all``; default the
first visible sheet: each sheet's rows are appended in order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.uploads import Upload, file_chunks, received_file
from server.datasets.store import DatasetRecord, NewRow
from server.errors import InvalidRequest
from server.http.keyed import KeyedContext
from server.ids import new_id
from server.resources import sessions
from server.resources._common import json_response
from server.resources.upload import tabular_error
from server.sessions.rules import MAX_COLUMNS, merge_sender_data
from server.sessions.store import SessionRecord, SessionStore
from server.storage import store_from_settings
from server.tabular import Limits, Row, Table, TabularError, check_xlsx, open_table, workbook_sheets

__all__ = [
    "SessionUploadForm",
    "Uploaded",
    "table_rows",
    "upload_csv",
    "upload_excel",
    "uploads_prefix",
]

_ID = re.compile(r"^[a-z]{2,8}_[0-9A-HJKMNP-TV-Z]{26}$")
MAX_SHEETS = 20


def uploads_prefix(session_id: str) -> str:
    """Where a session's uploaded files live in file storage."""
    return f"uploads/{session_id}/"


class SessionUploadForm(BaseModel):
    """multipart/form-data: ``file``, and optionally sender data and sheet choices."""

    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(description="The CSV or .xlsx file (at most BAVLIO_UPLOAD_MAX_BYTES).")
    sender_profile_id: str | None = Field(default=None, description="A saved sender profile.")
    sender_data: str | None = Field(default=None, description="A JSON object (a new profile).")
    sender_columns: str | None = Field(
        default=None, description="Comma-separated columns with per-row sender data."
    )
    sheets: str | None = Field(default=None, description="Excel: sheet names or 'all'.")


class RejectedRow(BaseModel):
    """A row not imported: its sheet (Excel), line and reason."""

    sheet: str | None
    line: int
    reason: str


class SheetImported(BaseModel):
    """What one table (the CSV, or one sheet) added."""

    sheet: str | None
    columns: list[str]
    added: int
    rejected: int
    header_line: int


class Uploaded(BaseModel):
    """The upload's outcome."""

    session_id: str
    dataset_id: str
    filename: str
    size_bytes: int
    kind: Literal["csv", "xlsx"]
    tables: list[SheetImported]
    added: int
    rejected: list[RejectedRow]
    row_count: int


def _sender_data(upload: Upload) -> dict[str, Any] | None:
    raw = upload.fields.get("sender_data")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(
            "parameter_invalid", "sender_data must be a JSON object.", param="sender_data"
        )
    sessions.check_sender(value)
    return value


def _sender_columns(upload: Upload) -> list[str]:
    raw = upload.fields.get("sender_columns", "")
    return [name.strip() for name in raw.split(",") if name.strip()][:50]


async def _apply_sender(ctx: KeyedContext, record: SessionRecord, upload: Upload) -> None:
    profile = upload.fields.get("sender_profile_id")
    if profile is not None and not _ID.fullmatch(profile):
        raise InvalidRequest(
            "parameter_invalid", "sender_profile_id is not an id.", param="sender_profile_id"
        )
    if profile is not None:
        await sessions.check_profile(ctx, profile)
    data = _sender_data(upload)
    store = SessionStore(ctx.services.db.engine)
    if data is not None:
        merged = merge_sender_data(record.sender_data, [data], "merge")
        sessions.check_sender(merged)
        await store.set_sender_data(ctx.user_id, record.id, merged)
    if profile is not None:
        await store.set_sender_profile(ctx.user_id, record.id, profile)


def table_rows(table: Table, sheet: str | None, rejected: list[RejectedRow]) -> Iterator[NewRow]:
    """The table's rows as dataset rows; row errors go to ``rejected``."""
    for item in table.rows:
        if isinstance(item, Row):
            yield NewRow(line=item.line, data=item.values)
        else:
            rejected.append(RejectedRow(sheet=sheet, line=item.line, reason=item.reason))


async def _import(
    ctx: KeyedContext,
    record: SessionRecord,
    dataset: DatasetRecord,
    table: Table,
    sheet: str | None,
    rejected: list[RejectedRow],
) -> SheetImported:
    if len(set(dataset.columns) | set(table.columns)) > MAX_COLUMNS:
        raise InvalidRequest(
            "too_many_columns",
            f"A dataset has at most {MAX_COLUMNS} columns; this file would add more.",
            param="file",
        )
    datasets = sessions.datasets_store(ctx)
    await datasets.extend_columns(dataset.id, table.columns)
    mine: list[RejectedRow] = []
    added = await datasets.append(dataset.id, table_rows(table, sheet, mine))
    if mine:  # counted once the stream is read (the reader finds them as it goes)
        await datasets.append(dataset.id, (), rejected=len(mine))
    rejected.extend(mine)
    return SheetImported(
        sheet=sheet,
        columns=table.columns,
        added=added,
        rejected=len(mine),
        header_line=table.header_line,
    )


async def _ensure_dataset(
    ctx: KeyedContext, record: SessionRecord, name: str, kind: str, upload: Upload
) -> DatasetRecord:
    dataset = await sessions.dataset_of(ctx, record)
    if dataset is None:
        dataset = await sessions.dataset_for(ctx, record, source_type=kind, name=name)
    columns = _sender_columns(upload)
    if columns:
        await sessions.datasets_store(ctx).set_mapping(
            dataset.id, {**dataset.mapping, "sender_columns": columns}
        )
    return dataset


async def _keep(ctx: KeyedContext, record: SessionRecord, upload: Upload, suffix: str) -> None:
    key = f"{uploads_prefix(record.id)}{new_id('up')}{suffix}"
    store = store_from_settings(ctx.services.settings)
    await store.put(key, file_chunks(upload.path), max_bytes=upload.size)


async def _receive(request: Request, ctx: KeyedContext, kind: Literal["csv", "xlsx"]) -> Response:
    record = await sessions.session_of(ctx, sessions.session_id_of(request))
    limits = Limits(max_bytes=ctx.services.settings.upload_max_bytes)
    async with received_file(request, limits.max_bytes) as upload:
        await _apply_sender(ctx, record, upload)
        rejected: list[RejectedRow] = []
        tables: list[SheetImported] = []
        try:
            names: list[str | None] = [None]
            if kind == "xlsx":
                names = [*_sheets(upload, limits)]
            dataset = await _ensure_dataset(ctx, record, upload.filename or kind, kind, upload)
            for sheet in names:
                with open_table(
                    upload.path, upload.filename, kind=kind, sheet=sheet, limits=limits
                ) as table:
                    tables.append(await _import(ctx, record, dataset, table, sheet, rejected))
        except TabularError as exc:
            raise tabular_error(exc) from None
        await _keep(ctx, record, upload, ".csv" if kind == "csv" else ".xlsx")
        fresh = await sessions.datasets_store(ctx).get(ctx.user_id, dataset.id)
        return json_response(
            Uploaded(
                session_id=record.id,
                dataset_id=dataset.id,
                filename=upload.filename,
                size_bytes=upload.size,
                kind=kind,
                tables=tables,
                added=sum(t.added for t in tables),
                rejected=rejected,
                row_count=fresh.row_count if fresh else 0,
            )
        )


def _sheets(upload: Upload, limits: Limits) -> list[str]:
    """The sheets to import: named ones (each must exist), every one, or the first visible."""
    suffix = Path(upload.filename).suffix.lower()
    if suffix in (".xlsm", ".xltm", ".xlam"):
        raise TabularError(
            "xlsm_not_supported", "Macro-enabled workbooks are not accepted; save as .xlsx."
        )
    check_xlsx(upload.path, limits)
    infos = workbook_sheets(upload.path, limits)
    if not infos:
        raise TabularError("no_sheets", "The workbook has no worksheet.")
    raw = (upload.fields.get("sheets") or "").strip()
    if not raw:
        visible = [info.name for info in infos if info.visible] or [infos[0].name]
        return [visible[0]]
    if raw.lower() == "all":
        return [info.name for info in infos][:MAX_SHEETS]
    wanted = list(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    known = {info.name for info in infos}
    for name in wanted:
        if name not in known:
            raise TabularError("sheet_not_found", f"The workbook has no sheet {name[:31]!r}.")
    return wanted[:MAX_SHEETS]


async def upload_csv(request: Request, ctx: KeyedContext) -> Response:
    """Import a CSV file (any usual encoding and delimiter) into the session's dataset."""
    return await _receive(request, ctx, "csv")


async def upload_excel(request: Request, ctx: KeyedContext) -> Response:
    """Import one or more sheets of an .xlsx workbook into the session's dataset."""
    return await _receive(request, ctx, "xlsx")
