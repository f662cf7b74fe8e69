"""The datasets group: list (search, pipeline type, archived; both paginations), metadata, rows,
rename, archive and restore, and streamed downloads as CSV, Excel or JSON.

Every route reads the dataset with its owner first, so another user's id is a 404 like an
unknown or malformed one. Rows keep their original columns; downloads give those, then the
columns our jobs added (risk, found email, ...).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from server.api.parsing import read_json
from server.datasets.export import FORMATS, XLSX_MAX_ROWS
from server.datasets.rules import download_filename, export_columns
from server.datasets.store import MAX_NAME, DatasetRecord, DatasetStore, StoredRow
from server.errors import (
    Conflict,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
)
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.jsontypes import NONBLANK
from server.resources._common import json_response, list_response, path_id

__all__ = [
    "MAX_ROWS_PAGE",
    "MAX_ROW_OFFSET",
    "DatasetList",
    "DatasetRows",
    "DatasetView",
    "Download",
    "RenameDataset",
    "archive",
    "download",
    "get_dataset",
    "list_datasets",
    "owned",
    "rename",
    "require_active",
    "restore",
    "rows",
    "store_of",
]

MAX_SEARCH = 200
LIST_PATH = "/datasets/list"
MAX_ROWS_PAGE = 1000
MAX_ROW_OFFSET = 10**12
_PIPELINE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_ROW_CURSOR = "r1:"


class DatasetView(BaseModel):
    """A dataset: its columns (original, then added by our jobs), counts and state."""

    id: str
    object: str = "dataset"
    name: str
    dataset_name: str = Field(description="The seed's name for ``name``.")
    source_type: str
    pipeline_type: str
    session_id: str | None
    columns: list[str]
    added_columns: list[str]
    mapping: dict[str, Any]
    row_count: int
    rejected_count: int
    download_count: int
    last_downloaded_at: float | None
    created_at: float
    updated_at: float
    archived_at: float | None
    archived: bool

    @classmethod
    def of(cls, record: DatasetRecord) -> DatasetView:
        """From the store's record."""
        return cls(
            id=record.id,
            name=record.name,
            dataset_name=record.name,
            source_type=record.source_type,
            pipeline_type=record.pipeline_type,
            session_id=record.session_id,
            columns=list(record.columns),
            added_columns=list(record.added_columns),
            mapping=record.mapping,
            row_count=record.row_count,
            rejected_count=record.rejected_count,
            download_count=record.download_count,
            last_downloaded_at=record.last_downloaded_at,
            created_at=record.created_at,
            updated_at=record.updated_at,
            archived_at=record.archived_at,
            archived=record.archived,
        )


class DatasetList(BaseModel):
    """A page of the user's datasets, newest first."""

    data: list[DatasetView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class RowView(BaseModel):
    """One row: position, line in the source file, original cells, the columns we added."""

    idx: int
    line: int | None
    data: dict[str, Any]
    added: dict[str, Any]

    @classmethod
    def of(cls, row: StoredRow) -> RowView:
        """From the store's row."""
        return cls(idx=row.idx, line=row.line, data=row.data, added=row.added)


class DatasetRows(BaseModel):
    """A page of a dataset's rows in order (``cursor`` or ``offset``; ``limit`` up to 1000)."""

    data: list[RowView]
    columns: list[str]
    added_columns: list[str]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


DatasetName = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=NONBLANK)]


def _one_of_the_names(schema: dict[str, Any]) -> None:
    """The documented schema says what the validator enforces: exactly one name, a string."""
    for field in ("dataset_name", "name"):
        prop = schema["properties"][field]
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        prop.update(options[0])
        prop.pop("default", None)
    schema["oneOf"] = [{"required": ["dataset_name"]}, {"required": ["name"]}]


class RenameDataset(BaseModel):
    """New metadata: the name, as ``dataset_name`` (the seed's field) or ``name`` (one of them)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra=_one_of_the_names
    )

    dataset_name: DatasetName | None = None
    name: DatasetName | None = None

    @model_validator(mode="after")
    def _one_name(self) -> RenameDataset:
        if (self.dataset_name is None) == (self.name is None):
            raise ValueError("give one of dataset_name and name")
        return self

    @property
    def new_name(self) -> str:
        """The name asked for."""
        name = self.dataset_name if self.dataset_name is not None else self.name
        assert name is not None
        return name.strip()


class Download(BaseModel):
    """The rows: as JSON, the column headers in order and one object per row keyed by header;
    as CSV or Excel, a file with the same header row."""

    columns: list[str]
    data: list[dict[str, Any]]


def store_of(ctx: KeyedContext) -> DatasetStore:
    """The dataset store on the app's database."""
    return DatasetStore(ctx.services.db.engine)


async def owned(request: Request, ctx: KeyedContext) -> DatasetRecord:
    """The caller's dataset named by the ``dataset_id`` path parameter, else a 404 (a 405 for
    ``/datasets/list``, the list's own path, under another method than GET)."""
    if request.path_params.get("dataset_id") == "list" and request.url.path.endswith(LIST_PATH):
        raise MethodNotAllowed(
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}.",
            headers={"Allow": "GET"},
        )
    dataset_id = path_id(request, "dataset_id", "ds", "dataset")
    record = await store_of(ctx).get(ctx.user_id, dataset_id)
    if record is None:
        raise NotFound("dataset_not_found", f"No dataset {dataset_id!r}.")
    return record


def require_active(record: DatasetRecord) -> None:
    """Refuse (409 ``dataset_archived``) to run a job on, or change the rows of, an archived
    dataset."""
    if record.archived:
        raise Conflict("dataset_archived", f"Dataset {record.id!r} is archived: restore it first.")


def _flag(query: Mapping[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None:
        return None
    value = raw.lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidRequest("parameter_invalid", f"Invalid {name}: true or false.", param=name)


async def list_datasets(request: Request, ctx: KeyedContext) -> Response:
    """The caller's datasets, newest first: ``search`` (in the name), ``pipeline_type``,
    ``include_archived=true`` (all) or ``archived=true|false`` (only those; it wins over
    ``include_archived``); archived ones are hidden by default. ``cursor``/``offset``, ``limit``."""
    query = request.query_params
    page = page_request(query)
    search = query.get("search")
    if search is not None and len(search) > MAX_SEARCH:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid search: at most {MAX_SEARCH} characters.", param="search"
        )
    pipeline = query.get("pipeline_type")
    if pipeline is not None and not _PIPELINE.fullmatch(pipeline):
        raise InvalidRequest(
            "parameter_invalid",
            "Invalid pipeline_type: 1-32 characters of a-z, 0-9, '_' and '-'.",
            param="pipeline_type",
        )
    include = _flag(query, "include_archived")
    only = _flag(query, "archived")
    archived = only if only is not None else (None if include else False)
    records = await store_of(ctx).list_datasets(
        ctx.user_id,
        limit=page.limit + 1,
        offset=page.offset,
        after=page.after,
        search=search.strip() if search and search.strip() else None,
        pipeline_type=pipeline,
        archived=archived,
    )
    return list_response(records, page, DatasetView.of, lambda r: r.id)


async def get_dataset(request: Request, ctx: KeyedContext) -> Response:
    """One of the caller's datasets (archived ones too)."""
    return json_response(DatasetView.of(await owned(request, ctx)))


def _row_cursor(idx: int) -> str:
    return base64.urlsafe_b64encode(f"{_ROW_CURSOR}{idx}".encode()).decode().rstrip("=")


def _after_row(cursor: str) -> int:
    bad = InvalidRequest("cursor_invalid", "The cursor is malformed.", param="cursor")
    if len(cursor) > 40:
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    number = text.removeprefix(_ROW_CURSOR)
    if not text.startswith(_ROW_CURSOR) or not number.isascii() or not number.isdigit():
        raise bad
    if len(number) > 12:
        raise bad
    return int(number)


def _bounded(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15 or not low <= int(raw) <= high:
        raise InvalidRequest(
            "parameter_invalid",
            f"Invalid {name}: must be an integer from {low} to {high}.",
            param=name,
        )
    return int(raw)


async def rows(request: Request, ctx: KeyedContext) -> Response:
    """A page of the dataset's rows in order: original cells and the columns we added."""
    record = await owned(request, ctx)
    query = request.query_params
    limit = _bounded(query, "limit", 100, 1, MAX_ROWS_PAGE)
    offset = _bounded(query, "offset", 0, 0, MAX_ROW_OFFSET)
    cursor = query.get("cursor")
    if cursor is not None and offset:
        raise InvalidRequest("parameter_invalid", "Use cursor or offset, not both.", param="cursor")
    start = _after_row(cursor) + 1 if cursor is not None else offset
    page = await store_of(ctx).rows(record.id, offset=start, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    body = DatasetRows(
        data=[RowView.of(row) for row in page],
        columns=list(record.columns),
        added_columns=list(record.added_columns),
        has_more=more,
        next_cursor=_row_cursor(page[-1].idx) if more and page else None,
        limit=limit,
        offset=offset,
    )
    return json_response(body)


async def rename(request: Request, ctx: KeyedContext) -> Response:
    """Rename a dataset (``dataset_name`` or ``name``, 1-200 characters)."""
    record = await owned(request, ctx)
    body = await read_json(request, RenameDataset)
    renamed = await store_of(ctx).rename(ctx.user_id, record.id, body.new_name)
    if renamed is None:  # deleted meanwhile
        raise NotFound("dataset_not_found", f"No dataset {record.id!r}.")
    return json_response(DatasetView.of(renamed))


async def archive(request: Request, ctx: KeyedContext) -> Response:
    """Archive a dataset: hidden from the list unless asked for, refused by jobs; idempotent."""
    record = await owned(request, ctx)
    done = await store_of(ctx).archive(ctx.user_id, record.id)
    if done is None:
        raise NotFound("dataset_not_found", f"No dataset {record.id!r}.")
    return json_response(DatasetView.of(done))


async def restore(request: Request, ctx: KeyedContext) -> Response:
    """Restore an archived dataset; idempotent."""
    record = await owned(request, ctx)
    done = await store_of(ctx).restore(ctx.user_id, record.id)
    if done is None:
        raise NotFound("dataset_not_found", f"No dataset {record.id!r}.")
    return json_response(DatasetView.of(done))


async def _cells(
    store: DatasetStore, record: DatasetRecord, keys: Sequence[tuple[bool, str]]
) -> AsyncIterator[list[Any]]:
    async for row in store.iter_rows(record.id):
        yield [(row.added if added else row.data).get(key) for added, key in keys]


async def download(request: Request, ctx: KeyedContext) -> Response:
    """The dataset's rows as ``format=csv`` (default), ``excel`` or ``json``, streamed:
    original columns, then the columns our jobs added. Each download is counted."""
    record = await owned(request, ctx)
    name = request.query_params.get("format", "csv").lower()
    name = "excel" if name == "xlsx" else name
    fmt = FORMATS.get(name)
    if fmt is None:
        raise InvalidRequest(
            "parameter_invalid", "Invalid format: csv, excel or json.", param="format"
        )
    if fmt.extension == "xlsx" and record.row_count >= XLSX_MAX_ROWS:
        raise RequestTooLarge(
            "too_many_rows",
            f"An Excel sheet holds at most {XLSX_MAX_ROWS - 1} rows: download it as csv or json.",
            param="format",
        )
    store = store_of(ctx)
    await store.record_download(ctx.user_id, record.id)
    columns = export_columns(record.columns, record.added_columns)
    headers = [column.header for column in columns]
    keys = [(column.added, column.key) for column in columns]
    filename = download_filename(record.name, fmt.extension)
    return StreamingResponse(
        fmt.writer(headers, _cells(store, record, keys)),
        media_type=fmt.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )
