"""The email-verification group: synchronous validation with a risk result (1 credit)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.billing.charge import debited
from server.http.keyed import KeyedContext
from server.resources._common import json_response
from server.usecases import email as email_cases
from server.usecases.email import ValidateRequest

__all__ = ["validate"]


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
