"""The job layer over HTTP: charged enqueueing for the job routes of every group, job status,
the caller's job list, and cancel. Another user's job id is a 404 like an unknown one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.billing.credits import InsufficientBalance
from server.billing.pricing import credits_for
from server.errors import Conflict, InsufficientCredits, InvalidRequest, NotFound, RequestTooLarge
from server.http.keyed import KeyedContext
from server.http.pagination import MAX_LIMIT
from server.jobs.errors import JobFinished, JobInputError, JobNotFound
from server.jobs.kinds import BILLING, KINDS
from server.jobs.models import Job
from server.resources._common import json_response

__all__ = [
    "JobAccepted",
    "JobList",
    "JobView",
    "cancel",
    "enqueue_charged",
    "get_job",
    "job_of",
    "list_jobs",
    "reserve_and_enqueue",
]

RETRY_AFTER = "2"


class Progress(BaseModel):
    """Rows of a bulk job: total, done, failed, skipped, and the fraction finished."""

    total: int
    done: int
    failed: int
    skipped: int
    fraction: float


class JobErrorView(BaseModel):
    """Why a job failed (a stable code and a message)."""

    code: str | None
    message: str | None


class JobView(BaseModel):
    """A job: status (queued, running, succeeded, failed, cancelled), progress, result."""

    id: str
    object: str = "job"
    kind: str
    status: str
    cancel_requested: bool
    progress: Progress
    result: Any = None
    error: JobErrorView | None = None
    created: float
    updated: float
    finished: float | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        """From the job layer's JSON form."""
        return cls.model_validate(job.as_json())


class JobAccepted(BaseModel):
    """A queued job: poll ``status_url`` (the Location header) after ``Retry-After`` seconds."""

    job_id: str
    status: str
    status_url: str
    credits_reserved: int = Field(description="Held now; captured for what is delivered.")


class JobList(BaseModel):
    """The caller's jobs, newest first."""

    data: list[JobView]
    has_more: bool
    next_cursor: str | None


async def enqueue_charged(
    ctx: KeyedContext,
    kind: str,
    payload: dict[str, Any],
    *,
    units: int = 1,
    items: Sequence[Any] | None = None,
    status_url: str,
    extra: Mapping[str, Any] | None = None,
    exclusive_key: str | None = None,
) -> Response:
    """Reserve ``units`` of the kind's price, enqueue, answer 202; nothing is held when the
    enqueue is refused. ``status_url`` has ``{job_id}`` to fill; ``extra`` fields join the
    answer (a route's own counts); ``exclusive_key``: see :meth:`JobQueue.enqueue`."""
    price_key = ctx.op.price_key
    assert price_key is not None
    price = ctx.services.prices[price_key]
    amount = credits_for(price, units).total
    job = await reserve_and_enqueue(
        ctx,
        kind,
        payload,
        amount,
        {"price_key": price_key},
        items,
        operation=price_key,
        exclusive_key=exclusive_key,
    )
    url = status_url.format(job_id=job.id)
    body = JobAccepted(job_id=job.id, status=job.status, status_url=url, credits_reserved=amount)
    return JSONResponse(
        {**body.model_dump(mode="json"), **(extra or {})},
        status_code=202,
        headers={"Location": url, "Retry-After": RETRY_AFTER},
    )


async def reserve_and_enqueue(
    ctx: KeyedContext,
    kind: str,
    payload: dict[str, Any],
    amount: int,
    pricing: dict[str, Any],
    items: Sequence[Any] | None,
    *,
    operation: str,
    exclusive_key: str | None = None,
) -> Job:
    """Hold ``amount`` credits (402 when the balance cannot cover it), then enqueue with the
    hold (and ``pricing``: how the terminal hook prices what was delivered) in the payload;
    the hold is released when the enqueue is refused."""
    credits = ctx.keyed.credits
    try:
        hold = await credits.reserve(ctx.user_id, amount, operation=operation) if amount else None
    except InsufficientBalance as exc:
        raise InsufficientCredits(
            "insufficient_credits",
            f"This costs {amount} credits; {exc.available} available. Top up to continue.",
        ) from None
    billing = {"hold_id": hold.id, **pricing} if hold else None
    try:
        return await ctx.services.jobs.enqueue(
            ctx.user_id, kind, {**payload, BILLING: billing}, items, exclusive_key=exclusive_key
        )
    except JobInputError as exc:
        if hold is not None:
            await credits.release(ctx.user_id, hold.id)
        error = RequestTooLarge if exc.too_large else InvalidRequest
        raise error("parameter_invalid", f"Invalid {exc.param}: {exc}.", param=exc.param) from None
    except BaseException:
        if hold is not None:
            await credits.release(ctx.user_id, hold.id)
        raise


async def job_of(ctx: KeyedContext, job_id: str, kinds: tuple[str, ...] = ()) -> Job:
    """The caller's job (of one of ``kinds`` when given), else a 404."""
    job = await ctx.services.jobs.get(ctx.user_id, job_id)
    if job is None or (kinds and job.kind not in kinds):
        raise NotFound("job_not_found", f"No job {job_id[:80]!r}.")
    return job


def _status_response(job: Job) -> Response:
    if job.terminal:
        return json_response(JobView.of(job))
    return json_response(JobView.of(job), headers={"Retry-After": RETRY_AFTER})


async def get_job(request: Request, ctx: KeyedContext) -> Response:
    """One of the caller's jobs."""
    return _status_response(await job_of(ctx, str(request.path_params["job_id"])))


async def list_jobs(request: Request, ctx: KeyedContext) -> Response:
    """The caller's jobs, newest first (``cursor``, ``limit``, ``kind``)."""
    query = request.query_params
    raw_limit = query.get("limit", "20")
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid limit: 1 to {MAX_LIMIT}.", param="limit"
        )
    kind = query.get("kind")
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid kind: one of {', '.join(KINDS)}.", param="kind"
        )
    try:
        page = await ctx.services.jobs.list(
            ctx.user_id, query.get("cursor"), int(raw_limit), kind=kind
        )
    except (JobInputError, ValueError):
        raise InvalidRequest("cursor_invalid", "The cursor or kind is malformed.") from None
    return json_response(
        JobList(
            data=[JobView.of(job) for job in page.data],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )
    )


async def cancel(request: Request, ctx: KeyedContext) -> Response:
    """Cancel a queued job now, or ask a running one to stop; its unused credits return."""
    job_id = str(request.path_params["job_id"])
    try:
        job = await ctx.services.jobs.cancel(ctx.user_id, job_id)
    except JobNotFound:
        raise NotFound("job_not_found", f"No job {job_id[:80]!r}.") from None
    except JobFinished:
        raise Conflict("job_finished", "The job has already finished.") from None
    return _status_response(job)


async def get_job_response(job: Job) -> Response:
    """A job's status document (Retry-After while it runs)."""
    return _status_response(job)


class BulkStatus(JobView):
    """A bulk job with what was skipped and, unless ``include_rows=false``, its rows."""

    skipped_invalid: int
    skipped_unresolved: int
    rows: list[dict[str, Any]] | None = None


async def rows_response(ctx: KeyedContext, request: Request, job: Job) -> Response:
    """The bulk status document: counts, skipped rows, and rows (``after``, at most 1000)."""
    include = request.query_params.get("include_rows", "true").lower()
    if include not in ("true", "false", "1", "0"):
        raise InvalidRequest(
            "parameter_invalid", "include_rows is true or false.", param="include_rows"
        )
    unresolved = await ctx.services.jobs.count_items(ctx.user_id, job.id, "unresolved")
    wanted = include in ("true", "1")
    items = await ctx.services.jobs.items(ctx.user_id, job.id, limit=1000) if wanted else []
    payload = job.payload if isinstance(job.payload, dict) else {}
    rows = [item.as_json() for item in items] if wanted else None
    view = BulkStatus(
        **JobView.of(job).model_dump(),
        skipped_invalid=int(payload.get("skipped_invalid_count", 0)),
        skipped_unresolved=unresolved,
        rows=rows,
    )
    headers = None if job.terminal else {"Retry-After": RETRY_AFTER}
    return json_response(view, headers=headers)
