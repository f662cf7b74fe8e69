"""The session groups: processing sessions (create, from a dataset, leads, sender data),
processing (start, status, results, job status) and delete with its cascade.

Sender data updates: ``mode: merge`` (default) sets the body's top-level keys over the
session's (a key sent as null is removed); ``replace`` swaps the whole object. The bulk route
applies several objects in order the same way (later objects win), in one write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.api.parsing import MAX_BODY, read_json
from server.datasets.store import DatasetRecord, DatasetStore, NewRow
from server.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
)
from server.extractions.documents import documents_for
from server.http.keyed import KeyedContext
from server.jobs.errors import JobFinished, JobInputError, JobNotFound
from server.jobs.models import Job
from server.jobs.rules import check_json
from server.jsontypes import NONBLANK
from server.resources import jobs
from server.resources._common import json_response, path_id
from server.resources.datasets import RowView
from server.sessions import processing
from server.sessions.rules import (
    FIELDS,
    PRICE_KEYS,
    ColumnSet,
    Enrichment,
    SessionState,
    flatten_lead,
    guess_mapping,
    merge_sender_data,
)
from server.sessions.store import SessionRecord, SessionStore

__all__ = [
    "CreateSession",
    "SessionView",
    "add_leads",
    "create",
    "delete",
    "from_dataset",
    "job_status",
    "process",
    "results",
    "sender_data",
    "sender_data_bulk",
    "status",
]

MAX_LEADS = 1000
"""Leads per call (more: call again; rows append after the last)."""
MAX_SENDER_BYTES = MAX_BODY
"""Sender data a session keeps (one body's worth; a bigger merge is a 409)."""
MAX_SENDER_DEPTH = 4
GUESS_SAMPLE = 1000
"""Rows whose values help guess which column holds which lead field."""
JOB_STATUS = "/api/v1/sessions/{session_id}/jobs/{job_id}/status"

Key = Annotated[str, Field(min_length=1, max_length=100)]
Scalar = Annotated[str, Field(max_length=10_000)] | int | float | bool | None
SenderValue = (
    Scalar
    | Annotated[list[Scalar], Field(max_length=100)]
    | Annotated[dict[Key, Scalar], Field(max_length=100)]
)
SenderData = Annotated[dict[Key, SenderValue], Field(max_length=100)]
LeadValue = Scalar | Annotated[dict[Key, Scalar], Field(max_length=200)]
Lead = Annotated[dict[Key, LeadValue], Field(max_length=200)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NONBLANK)]
PipelineType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Field_ = Literal[
    "email", "first_name", "last_name", "name", "company", "domain", "title", "location"
]


class CreateSession(BaseModel):
    """A new session: a name, the pipeline, free-form sender data (your company, offer, ...)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Name = "Untitled session"
    pipeline_type: PipelineType = "enrichment"
    sender_data: SenderData = Field(default_factory=dict)
    sender_profile_id: str | None = Field(
        default=None, pattern=r"^[a-z]{2,8}_[0-9A-HJKMNP-TV-Z]{26}$"
    )


class FromDataset(BaseModel):
    """A session over an existing dataset (re-enrichment writes into its rows)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Name | None = None
    sender_data: SenderData = Field(default_factory=dict)


class AddLeads(BaseModel):
    """Leads as JSON objects (flat, or with the extension's ``columnValues``): at most 1,000."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    leads: list[Lead] = Field(min_length=1, max_length=MAX_LEADS)


class SenderDataUpdate(BaseModel):
    """Sender data to merge into the session's (or to replace it with)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sender_data: SenderData
    mode: Literal["merge", "replace"] = "merge"


class SenderDataBulk(BaseModel):
    """Several sender data objects applied in order (later ones win), in one write."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    items: list[SenderData] = Field(min_length=1, max_length=20)
    mode: Literal["merge", "replace"] = "merge"


class ProcessRequest(BaseModel):
    """Enrichments to run over every row, and optionally which column holds each lead field
    (default: guessed from the column names)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enrichments: list[Literal["validate", "verify", "find", "linkedin"]] = Field(
        min_length=1, max_length=4
    )
    mapping: dict[Field_, Annotated[str, Field(min_length=1, max_length=200)]] | None = None


class SessionView(BaseModel):
    """A processing session."""

    id: str
    object: str = "session"
    name: str
    pipeline_type: str
    state: str
    sender_data: dict[str, Any]
    sender_profile_id: str | None
    dataset_id: str | None
    row_count: int
    enrichments: list[str]
    job_id: str | None
    created: float
    updated: float

    @classmethod
    def of(cls, record: SessionRecord, dataset: DatasetRecord | None) -> SessionView:
        """A session and its dataset's row count."""
        return cls(
            id=record.id,
            name=record.name,
            pipeline_type=record.pipeline_type,
            state=record.state.value,
            sender_data=record.sender_data,
            sender_profile_id=record.sender_profile_id,
            dataset_id=record.dataset_id,
            row_count=dataset.row_count if dataset else 0,
            enrichments=list(record.enrichments),
            job_id=record.job_id,
            created=record.created_at,
            updated=record.updated_at,
        )


class RejectedLead(BaseModel):
    """A lead not added: its index in the request and why."""

    index: int
    reason: str


class LeadsAdded(BaseModel):
    """What an append did."""

    session_id: str
    dataset_id: str
    added: int
    rejected: list[RejectedLead]
    row_count: int


class ProcessAccepted(BaseModel):
    """A started processing job: poll ``status_url``."""

    session_id: str
    job_id: str
    status: str
    status_url: str
    credits_reserved: int
    rows: int = Field(description="Rows with at least one enrichment to run.")
    skipped_rows: int = Field(description="Rows without the fields any enrichment needs.")


class SessionStatus(BaseModel):
    """A session's state and its job's progress."""

    session_id: str
    state: str
    dataset_id: str | None
    row_count: int
    enrichments: list[str]
    job: jobs.JobView | None
    progress: jobs.Progress | None


class SessionResults(BaseModel):
    """A page of the session's rows (``offset``/``limit``)."""

    session_id: str
    dataset_id: str | None
    columns: list[str]
    added_columns: list[str]
    data: list[RowView]
    has_more: bool
    next_cursor: str | None = None
    limit: int
    offset: int


class SessionDeleted(BaseModel):
    """What a delete removed."""

    id: str
    object: str = "session"
    deleted: bool = True
    job_cancelled: bool
    dataset_deleted: bool


# --- helpers shared with the extraction routes -------------------------------------------------


def _sessions(ctx: KeyedContext) -> SessionStore:
    return SessionStore(ctx.services.db.engine)


def _datasets(ctx: KeyedContext) -> DatasetStore:
    return DatasetStore(ctx.services.db.engine)


def _not_found(session_id: str) -> NotFound:
    return NotFound("session_not_found", f"No session {session_id[:80]!r}.")


def check_sender(data: Mapping[str, Any], field: str = "sender_data") -> None:
    """Bound sender data sent outside a JSON body (an upload's form field): depth and size."""
    try:
        check_json(data, limit=MAX_SENDER_BYTES, depth=MAX_SENDER_DEPTH, field=field)
    except JobInputError as exc:
        error = RequestTooLarge if exc.too_large else InvalidRequest
        raise error("parameter_invalid", f"Invalid {field}: {exc}.", param=field) from None


async def check_profile(ctx: KeyedContext, profile_id: str) -> None:
    """The caller's sender profile must exist (another user's is not found)."""
    from server.senders.store import SenderStore

    if await SenderStore(ctx.services.db.engine).get(ctx.user_id, profile_id) is None:
        raise NotFound(
            "sender_profile_not_found",
            f"No sender profile {profile_id[:80]!r}.",
            param="sender_profile_id",
        )


def check_merged(data: Mapping[str, Any]) -> None:
    """A merge that would grow the session's sender data over the bound is a 409 (each body
    is bounded by its schema and the body limit; merges add up)."""
    try:
        check_json(data, limit=MAX_SENDER_BYTES, depth=MAX_SENDER_DEPTH, field="sender_data")
    except JobInputError:
        raise Conflict(
            "sender_data_too_large",
            f"The merged sender data would exceed {MAX_SENDER_BYTES} bytes; replace it instead.",
            param="sender_data",
        ) from None


async def session_of(ctx: KeyedContext, session_id: str) -> SessionRecord:
    """The caller's session, synced with its job if that ended unnoticed; else a 404."""
    record = await _sessions(ctx).get(ctx.user_id, session_id)
    if record is None:
        raise _not_found(session_id)
    if record.state is SessionState.PROCESSING and record.job_id is not None:
        job = await ctx.services.jobs.get(ctx.user_id, record.job_id)
        if job is not None and job.terminal:
            await processing.job_ended(_sessions(ctx), job)
            record = await _sessions(ctx).get(ctx.user_id, session_id) or record
    return record


def datasets_store(ctx: KeyedContext) -> DatasetStore:
    """The dataset store on the caller's services."""
    return _datasets(ctx)


def session_id_of(request: Request) -> str:
    """The ``session_id`` path parameter (a malformed one is a 404)."""
    return _session_id(request)


def _session_id(request: Request) -> str:
    return path_id(request, "session_id", "sess", "session")


async def dataset_of(ctx: KeyedContext, record: SessionRecord) -> DatasetRecord | None:
    if record.dataset_id is None:
        return None
    return await _datasets(ctx).get(ctx.user_id, record.dataset_id)


async def view(ctx: KeyedContext, record: SessionRecord, status_code: int = 200) -> Response:
    """The session document."""
    return json_response(SessionView.of(record, await dataset_of(ctx, record)), status_code)


async def new_session(
    ctx: KeyedContext,
    *,
    name: str,
    pipeline_type: str,
    sender_data: Mapping[str, Any],
    sender_profile_id: str | None = None,
    dataset_id: str | None = None,
) -> SessionRecord:
    """A new session of the caller's (sender data bounded by the request's schema)."""
    if sender_profile_id is not None:
        await check_profile(ctx, sender_profile_id)
    return await _sessions(ctx).create(
        ctx.user_id,
        name=name,
        pipeline_type=pipeline_type,
        sender_data=sender_data,
        sender_profile_id=sender_profile_id,
        dataset_id=dataset_id,
    )


async def dataset_for(
    ctx: KeyedContext, record: SessionRecord, *, source_type: str, name: str
) -> DatasetRecord:
    """The session's dataset, made (empty) and linked if it has none yet."""
    store = _datasets(ctx)
    dataset = await store.create(
        ctx.user_id,
        name=name,
        source_type=source_type,
        pipeline_type=record.pipeline_type,
        columns=[],
        session_id=record.id,
    )
    if not await _sessions(ctx).set_dataset(ctx.user_id, record.id, dataset.id):
        await store.delete(ctx.user_id, dataset.id)  # another call linked one first
        fresh = await dataset_of(ctx, await session_of(ctx, record.id))
        if fresh is None:
            raise _not_found(record.id)
        return fresh
    return dataset


async def append_leads(
    ctx: KeyedContext,
    record: SessionRecord,
    leads: Sequence[Mapping[str, Any]],
    *,
    source_type: str = "api",
) -> LeadsAdded:
    """Flatten and append leads to the session's dataset (made on first use); a lead that
    cannot be a row is reported with its index and reason, and counted as rejected."""
    store = _datasets(ctx)
    dataset = await dataset_of(ctx, record)
    if dataset is None:
        dataset = await dataset_for(ctx, record, source_type=source_type, name=record.name)
    rows: list[NewRow] = []
    rejected: list[RejectedLead] = []
    columns = ColumnSet(dataset.columns)
    for index, lead in enumerate(leads):
        cells, reason = flatten_lead(lead)
        if reason is None:
            reason = columns.admit(cells)
        if reason is not None:
            rejected.append(RejectedLead(index=index, reason=reason))
            continue
        rows.append(NewRow(line=None, data=cells))
    if columns.added:
        await store.extend_columns(dataset.id, columns.added)
    added = await store.append(dataset.id, rows, rejected=len(rejected))
    return LeadsAdded(
        session_id=record.id,
        dataset_id=dataset.id,
        added=added,
        rejected=rejected,
        row_count=dataset.row_count + added,
    )


async def start(
    ctx: KeyedContext,
    record: SessionRecord,
    wanted: list[Enrichment],
    mapping: Mapping[str, str] | None,
) -> Response:
    """Claim the session, plan its rows, reserve their credits and enqueue the job (202);
    409 while it processes, 402 when the balance cannot cover the rows."""
    for enrichment in wanted:
        if not ctx.principal.plan.allows(PRICE_KEYS[enrichment]):
            raise Forbidden(
                "plan_forbidden",
                f"The {ctx.principal.plan_name} plan does not include {enrichment}; upgrade.",
            )
    dataset = await dataset_of(ctx, record)
    if dataset is None or dataset.row_count == 0:
        raise Conflict("session_empty", "The session has no leads to process; add some first.")
    sessions = _sessions(ctx)
    before = await sessions.start(ctx.user_id, record.id, list(wanted))
    if before is None:
        raise Conflict(
            "session_busy", f"The session is {record.state.value}; it cannot start processing now."
        )
    try:
        rows = [(row.idx, row.data) async for row in _datasets(ctx).iter_rows(dataset.id)]
        if mapping is not None:
            columns = mapping
        else:
            sample = (data for _, data in rows[:GUESS_SAMPLE])
            chosen = {
                k: v for k, v in dataset.mapping.items() if k in FIELDS and isinstance(v, str)
            }
            columns = {**guess_mapping(dataset.columns, sample), **chosen}
        plan = processing.plan_items(rows, columns, wanted)
        if not plan.items:
            raise Conflict(
                "nothing_to_process",
                "No row has the fields these enrichments need (see mapping).",
                param="mapping",
            )
        amount = plan.credits(ctx.services.prices)
        job = await jobs.reserve_and_enqueue(
            ctx,
            processing.KIND,
            {
                "session_id": record.id,
                "dataset_id": dataset.id,
                "enrichments": list(wanted),
                "skipped_invalid_count": plan.skipped,
            },
            amount,
            {"parts": plan.units},
            plan.items,
            operation=processing.OPERATION,
        )
    except BaseException:
        await sessions.abort(ctx.user_id, record.id, before)
        raise
    await sessions.set_job(ctx.user_id, record.id, job.id)
    url = JOB_STATUS.format(session_id=record.id, job_id=job.id)
    body = ProcessAccepted(
        session_id=record.id,
        job_id=job.id,
        status=job.status,
        status_url=url,
        credits_reserved=amount,
        rows=len(plan.items),
        skipped_rows=plan.skipped,
    )
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=202,
        headers={"Location": url, "Retry-After": jobs.RETRY_AFTER},
    )


# --- handlers ----------------------------------------------------------------------------------


async def create(request: Request, ctx: KeyedContext) -> Response:
    """A new session (state ``created``) with its sender data; leads come next."""
    body = await read_json(request, CreateSession)
    record = await new_session(
        ctx,
        name=body.name,
        pipeline_type=body.pipeline_type,
        sender_data=body.sender_data,
        sender_profile_id=body.sender_profile_id,
    )
    return await view(ctx, record, 201)


async def from_dataset(request: Request, ctx: KeyedContext) -> Response:
    """A session over one of the caller's datasets: processing annotates its rows again."""
    dataset_id = path_id(request, "dataset_id", "ds", "dataset")
    dataset = await _datasets(ctx).get(ctx.user_id, dataset_id)
    if dataset is None:
        raise NotFound("dataset_not_found", f"No dataset {dataset_id!r}.")
    body = await read_json(request, FromDataset)
    record = await new_session(
        ctx,
        name=body.name or dataset.name,
        pipeline_type=dataset.pipeline_type,
        sender_data=body.sender_data,
        dataset_id=dataset.id,
    )
    return await view(ctx, record, 201)


async def add_leads(request: Request, ctx: KeyedContext) -> Response:
    """Append leads as rows of the session's dataset (created on first use)."""
    record = await session_of(ctx, _session_id(request))
    body = await read_json(request, AddLeads)
    return json_response(await append_leads(ctx, record, list(body.leads)))


async def _update_sender(
    ctx: KeyedContext, session_id: str, updates: list[Mapping[str, Any]], mode: str
) -> Response:
    record = await session_of(ctx, session_id)
    merged = merge_sender_data(
        record.sender_data, updates, "replace" if mode == "replace" else "merge"
    )
    check_merged(merged)
    updated = await _sessions(ctx).set_sender_data(ctx.user_id, record.id, merged)
    if updated is None:
        raise _not_found(session_id)
    return await view(ctx, updated)


async def sender_data(request: Request, ctx: KeyedContext) -> Response:
    """Merge (default) or replace the session's sender data."""
    session_id = _session_id(request)
    await session_of(ctx, session_id)
    body = await read_json(request, SenderDataUpdate)
    return await _update_sender(ctx, session_id, [body.sender_data], body.mode)


async def sender_data_bulk(request: Request, ctx: KeyedContext) -> Response:
    """Apply several sender data objects in order (later keys win), in one write."""
    session_id = _session_id(request)
    await session_of(ctx, session_id)
    body = await read_json(request, SenderDataBulk)
    return await _update_sender(ctx, session_id, list(body.items), body.mode)


async def process(request: Request, ctx: KeyedContext) -> Response:
    """Start processing: the enrichments run over every row as one job (202)."""
    record = await session_of(ctx, _session_id(request))
    body = await read_json(request, ProcessRequest)
    wanted: list[Enrichment] = list(dict.fromkeys(body.enrichments))
    mapping: dict[str, str] | None = None
    if body.mapping is not None:
        mapping = {str(k): v for k, v in body.mapping.items()}
    return await start(ctx, record, wanted, mapping)


async def _job(ctx: KeyedContext, record: SessionRecord) -> Job | None:
    return await ctx.services.jobs.get(ctx.user_id, record.job_id) if record.job_id else None


async def status(request: Request, ctx: KeyedContext) -> Response:
    """The session's state and its job's progress."""
    record = await session_of(ctx, _session_id(request))
    dataset = await dataset_of(ctx, record)
    job = await _job(ctx, record)
    view_ = jobs.JobView.of(job) if job else None
    return json_response(
        SessionStatus(
            session_id=record.id,
            state=record.state.value,
            dataset_id=record.dataset_id,
            row_count=dataset.row_count if dataset else 0,
            enrichments=list(record.enrichments),
            job=view_,
            progress=view_.progress if view_ else None,
        )
    )


def _int(request: Request, name: str, default: int, high: int, low: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid {name}: an integer from {low} to {high}.", param=name
        )
    return int(raw)


async def results(request: Request, ctx: KeyedContext) -> Response:
    """A page of the session's rows with the columns processing added."""
    record = await session_of(ctx, _session_id(request))
    limit = _int(request, "limit", 50, 100, low=1)
    offset = _int(request, "offset", 0, 100_000_000)
    dataset = await dataset_of(ctx, record)
    rows = await _datasets(ctx).rows(dataset.id, offset=offset, limit=limit + 1) if dataset else []
    return json_response(
        SessionResults(
            session_id=record.id,
            dataset_id=record.dataset_id,
            columns=list(dataset.columns) if dataset else [],
            added_columns=list(dataset.added_columns) if dataset else [],
            data=[RowView.of(row) for row in rows[:limit]],
            has_more=len(rows) > limit,
            limit=limit,
            offset=offset,
        )
    )


async def job_status(request: Request, ctx: KeyedContext) -> Response:
    """One of the session's jobs (the current one or an earlier run's)."""
    record = await session_of(ctx, _session_id(request))
    job_id = str(request.path_params["job_id"])
    job = await ctx.services.jobs.get(ctx.user_id, job_id)
    payload = job.payload if job is not None and isinstance(job.payload, dict) else {}
    if job is None or payload.get("session_id") != record.id:
        raise NotFound("job_not_found", f"No job {job_id[:80]!r} in this session.")
    return await jobs.rows_response(ctx, request, job)


async def delete_session(ctx: KeyedContext, record: SessionRecord) -> SessionDeleted:
    """Cancel its job (unused credits return), delete its dataset when no other session uses
    it and the session made it, its stored file, then the session."""
    cancelled = False
    if record.job_id is not None:
        try:
            job = await ctx.services.jobs.cancel(ctx.user_id, record.job_id)
            cancelled = True
            del job
        except (JobNotFound, JobFinished):
            pass
    dataset_deleted = False
    dataset = await dataset_of(ctx, record)
    if dataset is not None and dataset.session_id == record.id:
        users = await _sessions(ctx).sessions_of_dataset(ctx.user_id, dataset.id)
        if set(users) <= {record.id}:
            if dataset.file_key:
                await documents_for(ctx.services).delete(dataset.file_key)
            dataset_deleted = await _datasets(ctx).delete(ctx.user_id, dataset.id)
    from server.extractions.store import ExtractionStore
    from server.resources.session_uploads import uploads_prefix
    from server.storage import store_from_settings

    await store_from_settings(ctx.services.settings).delete_prefix(uploads_prefix(record.id))

    await ExtractionStore(ctx.services.db.engine).unlink_session(ctx.user_id, record.id)
    if not await _sessions(ctx).delete(ctx.user_id, record.id):
        raise _not_found(record.id)
    return SessionDeleted(id=record.id, job_cancelled=cancelled, dataset_deleted=dataset_deleted)


async def delete(request: Request, ctx: KeyedContext) -> Response:
    """Delete the session and what only it used (job cancelled, dataset, rows, files)."""
    if request.path_params.get("session_id") == "create":  # the POST route's path
        raise MethodNotAllowed(
            "method_not_allowed", "Use POST to create a session.", headers={"Allow": "POST"}
        )
    record = await session_of(ctx, _session_id(request))
    return json_response(await delete_session(ctx, record))
