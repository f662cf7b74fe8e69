"""The user-extractions group: lead lists the browser extension saved (a JSON document in file
storage): save, list, info, download flattened (CSV, Excel, JSON), rename, delete, bulk delete,
and turning one into a processing session (and processing it).

Flattening is the sessions' rule (:func:`server.sessions.rules.flatten_lead`): ``columnValues.*``
fields lose their prefix; a top-level field of the same name is kept as ``<name> (lead)``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from server.api.parsing import read_json
from server.errors import Conflict, InvalidRequest, MethodNotAllowed, NotFound, ServiceUnavailable
from server.extractions.documents import DocumentMissing, documents_for
from server.extractions.store import ExtractionRecord, ExtractionStore
from server.http.keyed import KeyedContext
from server.http.pagination import page_of, page_request
from server.ids import new_id
from server.jsontypes import NONBLANK
from server.resources import sessions
from server.resources._common import json_response, path_id
from server.sessions.rules import ColumnSet, Enrichment, SessionState, flatten_lead
from server.sessions.store import SessionRecord
from server.tabular.writers import csv_chunks, json_chunks, xlsx_chunks

__all__ = [
    "ExtractionView",
    "SaveExtraction",
    "bulk_delete",
    "create_session",
    "delete",
    "download",
    "info",
    "list_extractions",
    "process",
    "rename",
    "save",
]

MAX_EXTRACTION_LEADS = 5000
SOURCE = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$"
Title = Annotated[str, Field(min_length=1, max_length=200, pattern=NONBLANK)]


class SaveExtraction(BaseModel):
    """A lead list as the extension saves it: objects whose cells may sit in ``columnValues``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    title: Title
    source: str = Field(pattern=SOURCE, max_length=64, description="e.g. LinkedIn, PitchBook.")
    leads: list[sessions.Lead] = Field(min_length=1, max_length=MAX_EXTRACTION_LEADS)
    metadata: sessions.SenderData = Field(
        default_factory=dict, description="Free-form: page URL, filters used, ..."
    )


class ExtractionView(BaseModel):
    """An extraction's record."""

    id: str
    object: str = "extraction"
    title: str
    source: str
    lead_count: int
    size_bytes: int
    columns: list[str]
    metadata: dict[str, Any]
    session_id: str | None
    created: float
    updated: float

    @classmethod
    def of(cls, record: ExtractionRecord) -> ExtractionView:
        """From the store."""
        return cls(
            id=record.id,
            title=record.title,
            source=record.source,
            lead_count=record.lead_count,
            size_bytes=record.size_bytes,
            columns=list(record.columns),
            metadata=dict(record.meta.get("metadata", {})),
            session_id=record.session_id,
            created=record.created_at,
            updated=record.updated_at,
        )


class ExtractionFile(BaseModel):
    """The flattened leads: as JSON, the column headers in order and one object per lead keyed
    by header (the same shape as a dataset's JSON download); as CSV or Excel, a file with the
    same header row."""

    columns: list[str]
    data: list[dict[str, str]]


class ExtractionSaved(BaseModel):
    """A saved extraction and the leads left out (with their index and why)."""

    extraction: ExtractionView
    rejected: list[sessions.RejectedLead]


class ExtractionInfo(ExtractionView):
    """An extraction with its first rows, flattened."""

    preview: list[dict[str, str]]


class ExtractionList(BaseModel):
    """A page of the caller's extractions, newest first."""

    data: list[ExtractionView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class Rename(BaseModel):
    """A new title."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    title: Title


class BulkDelete(BaseModel):
    """Extraction ids to delete (at most 100)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    ids: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=100)


class DeleteResult(BaseModel):
    """One id's outcome: deleted, or not found (unknown, malformed or another user's)."""

    id: str
    deleted: bool
    error: Literal["not_found"] | None = None


class BulkDeleted(BaseModel):
    """Each id's outcome, in the request's order."""

    results: list[DeleteResult]
    deleted_count: int


class Deleted(BaseModel):
    """A deleted extraction."""

    id: str
    object: str = "extraction"
    deleted: bool = True


class CreateSessionRequest(BaseModel):
    """Optional name and sender data of the new session."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: sessions.Name | None = None
    pipeline_type: sessions.PipelineType = "enrichment"
    sender_data: sessions.SenderData = Field(default_factory=dict)


class SessionCreated(BaseModel):
    """The session made from an extraction and its rows."""

    session: sessions.SessionView
    extraction_id: str
    dataset_id: str
    added: int
    rejected: list[sessions.RejectedLead]


class ProcessExtraction(BaseModel):
    """Process into ``session_id`` (its leads appended) or a new session, then start."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    session_id: str | None = Field(default=None, pattern=r"^sess_[0-9A-HJKMNP-TV-Z]{26}$")
    enrichments: list[Literal["validate", "verify", "find", "linkedin"]] = Field(
        min_length=1, max_length=4
    )
    mapping: dict[sessions.Field_, Annotated[str, Field(min_length=1, max_length=200)]] | None = (
        None
    )
    name: sessions.Name | None = None
    sender_data: sessions.SenderData = Field(default_factory=dict)


# --- helpers ------------------------------------------------------------------------------------


def _store(ctx: KeyedContext) -> ExtractionStore:
    return ExtractionStore(ctx.services.db.engine)


def _extraction_id(request: Request) -> str:
    return path_id(request, "extraction_id", "ext", "extraction")


async def _extraction(ctx: KeyedContext, extraction_id: str) -> ExtractionRecord:
    record = await _store(ctx).get(ctx.user_id, extraction_id)
    if record is None:
        raise NotFound("extraction_not_found", f"No extraction {extraction_id!r}.")
    return record


async def _leads(ctx: KeyedContext, record: ExtractionRecord) -> list[dict[str, Any]]:
    """The stored leads (as saved; each flattens, checked when saved)."""
    try:
        raw = await documents_for(ctx.services).get(record.storage_key)
    except DocumentMissing:
        raise ServiceUnavailable(
            "extraction_file_missing", "The extraction's file is not in storage."
        ) from None
    leads: list[dict[str, Any]] = json.loads(raw)
    return leads


def _flat(leads: list[dict[str, Any]]) -> Iterator[dict[str, str]]:
    for lead in leads:
        cells, reason = flatten_lead(lead)
        if reason is None:
            yield cells


# --- handlers -----------------------------------------------------------------------------------


async def save(request: Request, ctx: KeyedContext) -> Response:
    """Save a lead list: leads that cannot be rows are left out and reported."""
    body = await read_json(request, SaveExtraction)
    kept: list[dict[str, Any]] = []
    rejected: list[sessions.RejectedLead] = []
    columns = ColumnSet(())
    for index, lead in enumerate(body.leads):
        cells, reason = flatten_lead(lead)
        if reason is None:
            reason = columns.admit(cells)
        if reason is not None:
            rejected.append(sessions.RejectedLead(index=index, reason=reason))
            continue
        kept.append(dict(lead))
    extraction_id = new_id("ext")
    key = f"extractions/{extraction_id}.json"
    document = json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    await documents_for(ctx.services).put(key, document)
    record = await _store(ctx).create(
        ctx.user_id,
        extraction_id,
        title=body.title,
        source=body.source,
        storage_key=key,
        lead_count=len(kept),
        size_bytes=len(document),
        columns=columns.added,
        meta={"metadata": dict(body.metadata), "rejected_count": len(rejected)},
    )
    return json_response(
        ExtractionSaved(extraction=ExtractionView.of(record), rejected=rejected), 201
    )


async def list_extractions(request: Request, ctx: KeyedContext) -> Response:
    """The caller's extractions, newest first (``limit`` 50 by default, ``offset``, ``cursor``,
    ``source``)."""
    query = request.query_params
    page = page_request({"limit": "50", **query})
    source = query.get("source")
    if source is not None and not re.fullmatch(SOURCE, source):
        raise InvalidRequest("parameter_invalid", "Invalid source.", param="source")
    records = await _store(ctx).list(
        ctx.user_id, limit=page.limit + 1, offset=page.offset, after=page.after, source=source
    )
    sliced = page_of(records, page, lambda r: r.id)
    return json_response(
        ExtractionList(
            data=[ExtractionView.of(r) for r in sliced.data],
            has_more=sliced.has_more,
            next_cursor=sliced.next_cursor,
            limit=page.limit,
            offset=page.offset,
        )
    )


async def info(request: Request, ctx: KeyedContext) -> Response:
    """An extraction with its first five rows, flattened."""
    record = await _extraction(ctx, _extraction_id(request))
    leads = await _leads(ctx, record)
    preview = [cells for _, cells in zip(range(5), _flat(leads), strict=False)]
    return json_response(ExtractionInfo(**ExtractionView.of(record).model_dump(), preview=preview))


_FORMATS: Mapping[str, tuple[str, str]] = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "excel": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    "json": ("application/json", "json"),
}


def _filename(title: str, extension: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_ ") else "_" for c in title)
    return f"{safe.strip()[:80] or 'extraction'}.{extension}"


async def download(request: Request, ctx: KeyedContext) -> Response:
    """The leads flattened, streamed as CSV (default), Excel or JSON."""
    record = await _extraction(ctx, _extraction_id(request))
    fmt = request.query_params.get("format", "csv")
    if fmt not in _FORMATS:
        raise InvalidRequest(
            "parameter_invalid", "Invalid format: csv, excel or json.", param="format"
        )
    leads = await _leads(ctx, record)
    columns = list(record.columns)
    rows = _flat(leads)
    if fmt == "csv":
        chunks = csv_chunks(columns, rows)
    elif fmt == "excel":
        chunks = xlsx_chunks(columns, rows, sheet=record.title[:31])
    else:  # {"columns": [...], "data": [...]}, streamed
        head = b'{"columns":' + json.dumps(columns, ensure_ascii=False).encode() + b',"data":'
        chunks = itertools.chain((head,), json_chunks(columns, rows), (b"}",))
    media, extension = _FORMATS[fmt]
    name = _filename(record.title, extension)
    return StreamingResponse(
        chunks,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def rename(request: Request, ctx: KeyedContext) -> Response:
    """Change the title."""
    extraction_id = _extraction_id(request)
    await _extraction(ctx, extraction_id)
    body = await read_json(request, Rename)
    record = await _store(ctx).rename(ctx.user_id, extraction_id, body.title)
    if record is None:
        raise NotFound("extraction_not_found", f"No extraction {extraction_id!r}.")
    return json_response(ExtractionView.of(record))


async def _delete_one(ctx: KeyedContext, extraction_id: str) -> bool:
    record = await _store(ctx).delete(ctx.user_id, extraction_id)
    if record is None:
        return False
    await documents_for(ctx.services).delete(record.storage_key)
    return True


async def delete(request: Request, ctx: KeyedContext) -> Response:
    """Delete the extraction and its file (a session made from it stays)."""
    if request.path_params.get("extraction_id") == "bulk-delete":  # the POST route's path
        raise MethodNotAllowed(
            "method_not_allowed", "Use POST for bulk-delete.", headers={"Allow": "POST"}
        )
    extraction_id = _extraction_id(request)
    if not await _delete_one(ctx, extraction_id):
        raise NotFound("extraction_not_found", f"No extraction {extraction_id!r}.")
    return json_response(Deleted(id=extraction_id))


async def bulk_delete(request: Request, ctx: KeyedContext) -> Response:
    """Delete several; each id answered in order (another user's id is ``not_found``)."""
    body = await read_json(request, BulkDelete)
    results: list[DeleteResult] = []
    for extraction_id in dict.fromkeys(body.ids):
        ok = extraction_id.startswith("ext_") and await _delete_one(ctx, extraction_id)
        results.append(
            DeleteResult(id=extraction_id, deleted=ok, error=None if ok else "not_found")
        )
    return json_response(
        BulkDeleted(results=results, deleted_count=sum(1 for r in results if r.deleted))
    )


async def _into_session(
    ctx: KeyedContext,
    record: ExtractionRecord,
    session: SessionRecord,
) -> sessions.LeadsAdded:
    leads = await _leads(ctx, record)
    added = await sessions.append_leads(ctx, session, leads, source_type="extraction")
    await _store(ctx).link_session(ctx.user_id, record.id, session.id)
    return added


async def create_session(request: Request, ctx: KeyedContext) -> Response:
    """A new session whose dataset (source ``extraction``) holds the extraction's leads."""
    record = await _extraction(ctx, _extraction_id(request))
    body = await read_json(request, CreateSessionRequest)
    session = await sessions.new_session(
        ctx,
        name=body.name or record.title,
        pipeline_type=body.pipeline_type,
        sender_data=body.sender_data,
    )
    added = await _into_session(ctx, record, session)
    fresh = await sessions.session_of(ctx, session.id)
    dataset = await sessions.dataset_of(ctx, fresh)
    return json_response(
        SessionCreated(
            session=sessions.SessionView.of(fresh, dataset),
            extraction_id=record.id,
            dataset_id=added.dataset_id,
            added=added.added,
            rejected=added.rejected,
        ),
        201,
    )


async def process(request: Request, ctx: KeyedContext) -> Response:
    """Append the leads to ``session_id`` (or a new session) and start processing (202)."""
    record = await _extraction(ctx, _extraction_id(request))
    body = await read_json(request, ProcessExtraction)
    if body.session_id is not None:
        session = await sessions.session_of(ctx, body.session_id)
        if session.state is SessionState.PROCESSING:
            raise Conflict("session_busy", "The session is processing; wait for it to end.")
    else:
        session = await sessions.new_session(
            ctx,
            name=body.name or record.title,
            pipeline_type="enrichment",
            sender_data=body.sender_data,
        )
    wanted: list[Enrichment] = list(dict.fromkeys(body.enrichments))
    mapping = {str(k): v for k, v in body.mapping.items()} if body.mapping is not None else None
    try:
        await _into_session(ctx, record, session)
        fresh = await sessions.session_of(ctx, session.id)
        return await sessions.start(ctx, fresh, wanted, mapping)
    except BaseException:
        if body.session_id is None:  # the session made for this call goes with its failure
            await sessions.delete_session(ctx, session)
        raise
