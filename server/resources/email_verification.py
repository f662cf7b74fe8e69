"""The email-verification group: synchronous validation with a risk result (1 credit), and a
bulk SMTP verification job (1 credit per address answered, reserved at enqueue)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_body, read_json
from server.billing.charge import debited
from server.datasets.rules import above, detect_email_column
from server.datasets.store import DatasetRecord
from server.db.models import JobRow
from server.db.tx import read_connection
from server.errors import Conflict, InvalidRequest, RequestTooLarge
from server.http.keyed import KeyedContext
from server.jobs.errors import JobBusy
from server.jobs.rules import ACTIVE
from server.jsontypes import JsonInt
from server.resources import datasets, jobs
from server.resources._common import json_response
from server.usecases import email as email_cases
from server.usecases.email import ValidateRequest

__all__ = [
    "BulkVerifyRequest",
    "DatasetVerifyAccepted",
    "PruneRequest",
    "PruneResult",
    "VerifyDatasetRequest",
    "bulk",
    "bulk_status",
    "prune_dataset",
    "validate",
    "verify_dataset",
]

M = TypeVar("M", bound=BaseModel)


async def validate(request: Request, ctx: KeyedContext) -> Response:
    """Validate one address (syntax, lists, typo, MX) and return its risk; charged only when
    answered (a DNS failure is a 503 and costs nothing), by one debit after the work (quick
    work: a balance spent meanwhile by concurrent calls is a 402 and the result is withheld)."""
    body = await read_json(request, ValidateRequest)
    price = ctx.services.prices["email.validate"]
    credits = ctx.keyed.credits
    available = ctx.principal.available_credits
    async with debited(credits, ctx.user_id, "email.validate", price, available=available):
        result = await email_cases.validate(ctx.services, body.email)
    return json_response(result)


BULK_STATUS = "/api/v1/email-verification/bulk/{job_id}/status"
MAX_BULK_EMAILS = 10_000


class BulkVerifyRequest(BaseModel):
    """Addresses to verify over SMTP (at most 10,000)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    emails: list[Annotated[str, Field(min_length=1, max_length=320)]] = Field(
        min_length=1, max_length=MAX_BULK_EMAILS
    )


async def bulk(request: Request, ctx: KeyedContext) -> Response:
    """Queue a bulk verification: 1 credit per address reserved; an address that cannot be
    answered (invalid, mail server unreachable) fails its row and is not charged."""
    body = await read_json(request, BulkVerifyRequest)
    return await jobs.enqueue_charged(
        ctx,
        "email.bulk_verify",
        {},
        units=len(body.emails),
        items=list(body.emails),
        status_url=BULK_STATUS,
    )


async def bulk_status(request: Request, ctx: KeyedContext) -> Response:
    """Counts of a bulk verification, and its rows unless ``include_rows=false``."""
    job = await jobs.job_of(ctx, str(request.path_params["job_id"]), ("email.bulk_verify",))
    return await jobs.rows_response(ctx, request, job)


# --- datasets: verify every row's address as one job; prune rows above a risk threshold ---

JOB_STATUS = "/api/v1/jobs/{job_id}"
DATASET_VERIFY = "email.dataset_verify"
MAX_ADDRESS = 320
SAMPLE_ROWS = 50


class VerifyDatasetRequest(BaseModel):
    """Which column holds the address (default: the dataset's mapped email column, else the
    column detected from the headers and values)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    email_column: str | None = Field(default=None, min_length=1, max_length=200)


class DatasetVerifyAccepted(jobs.JobAccepted):
    """A queued dataset verification: rows with an address are verified (1 credit each
    reserved); rows without one are skipped uncharged. Poll the job (``status_url``)."""

    dataset_id: str
    email_column: str
    rows_to_verify: int
    skipped_no_email: int
    skipped_invalid: int = Field(description=f"Cells over {MAX_ADDRESS} characters.")


class PruneRequest(BaseModel):
    """Delete rows riskier than ``max_risk``: a level (``low``, ``medium``, ``high``) or a risk
    score 0-100 (higher is riskier); ``dry_run`` only counts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_risk: (
        Literal["low", "medium", "high"]
        | Annotated[
            JsonInt,
            Field(ge=0, le=100),
            WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 100}),
        ]
    )
    dry_run: bool = False


class PruneResult(BaseModel):
    """What the prune did (or would do): rows deleted, kept (of which never verified), left."""

    dataset_id: str
    dry_run: bool
    max_risk: str | int
    deleted: int
    kept: int
    unverified: int
    row_count: int


async def _optional_json(request: Request, model: type[M]) -> M:
    """The body as ``model``, or its defaults when the body is empty."""
    if not (await read_body(request)).strip():
        return model()
    return await read_json(request, model)


async def _verifying(ctx: KeyedContext, dataset_id: str) -> bool:
    """Whether a verification of the caller's dataset is queued or running."""
    query = select(JobRow.payload).where(
        JobRow.owner_id == ctx.user_id,
        JobRow.kind == DATASET_VERIFY,
        JobRow.state.in_([state.value for state in ACTIVE]),
    )
    async with read_connection(ctx.services.db.engine) as conn:
        payloads = (await conn.execute(query)).scalars().all()
    return any(isinstance(p, dict) and p.get("dataset_id") == dataset_id for p in payloads)


async def _email_column(ctx: KeyedContext, record: DatasetRecord, asked: str | None) -> str:
    if asked is not None:
        if asked not in record.columns:
            raise InvalidRequest(
                "parameter_invalid",
                "Invalid email_column: not a column of this dataset.",
                param="email_column",
            )
        return asked
    mapped = record.mapping.get("email")
    if isinstance(mapped, str) and mapped in record.columns:
        return mapped
    sample = [row.data for row in await datasets.store_of(ctx).rows(record.id, limit=SAMPLE_ROWS)]
    found = detect_email_column(record.columns, sample)
    if found is None:
        raise InvalidRequest(
            "email_column_unknown",
            "No column of this dataset holds email addresses: name one in email_column.",
            param="email_column",
        )
    return found


async def verify_dataset(request: Request, ctx: KeyedContext) -> Response:
    """Verify every row's address as one job (1 credit per row reserved, charged for the rows
    answered; a verdict cached within its window is used free); each row gets ``risk``,
    ``risk_score``, ``verdict``, ``smtp_status`` and ``reason`` as it completes. Rows without
    an address are skipped uncharged and counted. 409 for an archived dataset or one already
    being verified."""
    record = await datasets.owned(request, ctx)
    body = await _optional_json(request, VerifyDatasetRequest)
    datasets.require_active(record)
    column = await _email_column(ctx, record, body.email_column)
    if await _verifying(ctx, record.id):
        raise Conflict("dataset_busy", f"Dataset {record.id!r} is being verified already.")
    limit = ctx.services.jobs.limits.items
    items: list[dict[str, Any]] = []
    empty = invalid = 0
    async for row in datasets.store_of(ctx).iter_rows(record.id):
        value = row.data.get(column)
        email = value.strip() if isinstance(value, str) else ""
        if not email:
            empty += 1
        elif len(email) > MAX_ADDRESS:
            invalid += 1
        else:
            items.append({"row": row.idx, "email": email})
            if len(items) > limit:
                raise RequestTooLarge(
                    "dataset_too_large",
                    f"At most {limit} addresses are verified in one job.",
                )
    counts = {"skipped_no_email": empty, "skipped_invalid": invalid}
    try:
        return await jobs.enqueue_charged(
            ctx,
            DATASET_VERIFY,
            {"dataset_id": record.id, "email_column": column, **counts},
            units=len(items),
            items=items,
            status_url=JOB_STATUS,
            extra={
                "dataset_id": record.id,
                "email_column": column,
                "rows_to_verify": len(items),
                **counts,
            },
            exclusive_key=f"{DATASET_VERIFY}:{record.id}",
        )
    except JobBusy:  # a request racing this one enqueued first (its credits were released)
        raise Conflict(
            "dataset_busy", f"Dataset {record.id!r} is being verified already."
        ) from None


async def prune_dataset(request: Request, ctx: KeyedContext) -> Response:
    """Delete the rows whose stored risk is above ``max_risk`` and number the rest contiguously
    (rows never verified are kept and counted); ``dry_run`` only counts. 409 while the dataset
    is being verified, or when it is archived."""
    record = await datasets.owned(request, ctx)
    body = await read_json(request, PruneRequest)
    datasets.require_active(record)
    if not body.dry_run and await _verifying(ctx, record.id):
        raise Conflict(
            "dataset_busy", f"Dataset {record.id!r} is being verified: prune once it finished."
        )
    threshold = body.max_risk
    counts = await datasets.store_of(ctx).prune(
        record.id, lambda added: above(added, threshold), dry_run=body.dry_run
    )
    return json_response(
        PruneResult(
            dataset_id=record.id,
            dry_run=body.dry_run,
            max_risk=threshold,
            deleted=counts.deleted,
            kept=counts.kept,
            unverified=counts.unverified,
            row_count=counts.row_count if not body.dry_run else record.row_count,
        )
    )
