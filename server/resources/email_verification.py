"""The email-verification group: synchronous validation with a risk result (1 credit)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.billing.charge import charged
from server.http.keyed import KeyedContext
from server.resources._common import json_response
from server.usecases import email as email_cases
from server.usecases.email import ValidateRequest

__all__ = ["validate"]


async def validate(request: Request, ctx: KeyedContext) -> Response:
    """Validate one address (syntax, lists, typo, MX) and return its risk; charged only when
    answered (a DNS failure is a 503 and costs nothing)."""
    body = await read_json(request, ValidateRequest)
    price = ctx.services.settings.price_table()["email.validate"]
    async with charged(ctx.keyed.credits, ctx.user_id, "email.validate", price):
        result = await email_cases.validate(ctx.services, body.email)
    return json_response(result)
