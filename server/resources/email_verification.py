"""The email-verification group: synchronous validation with a risk result (1 credit), and a
bulk SMTP verification job (1 credit per address answered, reserved at enqueue)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.billing.charge import debited
from server.http.keyed import KeyedContext
from server.resources import jobs
from server.resources._common import json_response
from server.usecases import email as email_cases
from server.usecases.email import ValidateRequest

__all__ = ["BulkVerifyRequest", "bulk", "bulk_status", "validate"]


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
