"""Handlers of the wallet-paid routes (``/api/x402/v1``); the payment gate wraps them, not here.
Each reads its body and calls the use case in :mod:`server.usecases`, as the keyed routes do.

A question answered (even "this address is invalid", "this name names nobody") is a 200 and gets
charged; a body the OpenAPI schema rejects is a 400, and a failure of an upstream we depend on
(DNS, SMTP, search backend) a 5xx, both error envelopes the gate never settles. Every emailintel
error (:class:`~emailintel.errors.EmailIntelError`) a handler can meet is mapped explicitly by
:func:`server.api.upstream.library_error`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.api.parsing import read_json
from server.api.upstream import UpstreamError
from server.prospects.models import SearchRequest
from server.services import services
from server.usecases import email as email_cases
from server.usecases import find as find_cases
from server.usecases import linkedin as linkedin_cases
from server.usecases.email import ValidateRequest, ValidateResponse
from server.usecases.find import FindAttempt, FindRequest, FindResponse
from server.usecases.linkedin import LinkedInRequest, LinkedInResponse

__all__ = [
    "FindAttempt",
    "FindRequest",
    "FindResponse",
    "LinkedInRequest",
    "LinkedInResponse",
    "UpstreamError",
    "ValidateRequest",
    "ValidateResponse",
    "find_email",
    "find_linkedin_url",
    "prospects_search",
    "validate_email",
    "verify_email",
]


async def validate_email(request: Request) -> JSONResponse:
    """Syntax, lists, typo and MX checks; bad addresses are answered (risk_level ``invalid``)."""
    body = await read_json(request, ValidateRequest)
    result = await email_cases.validate(services(request), body.email)
    return JSONResponse(result.model_dump(mode="json"))


async def verify_email(request: Request) -> JSONResponse:
    """Validation plus an SMTP mailbox probe; unreachable or timed-out mail servers are not charged.

    An address that cannot be put in an SMTP command safely is a 400.
    """
    body = await read_json(request, ValidateRequest)
    result = await email_cases.verify(services(request), body.email)
    return JSONResponse(result.model_dump(mode="json"))


async def find_email(request: Request) -> JSONResponse:
    """Probe candidates in order over one SMTP session per domain; the first accepted one wins.

    A name or domain no address can be made of is answered with no attempts.
    """
    body = await read_json(request, FindRequest)
    response = await find_cases.find(services(request), body)
    return JSONResponse(response.model_dump(mode="json"))


async def find_linkedin_url(request: Request) -> JSONResponse:
    """Search-engine results scored against the person; rate limits and outages are not charged.

    A name or company nobody can be searched by (no letters, no surname) is answered with no
    candidates and no queries.
    """
    body = await read_json(request, LinkedInRequest)
    result = await linkedin_cases.find_linkedin_url(services(request), body)
    return JSONResponse(result.model_dump(mode="json"))


async def prospects_search(request: Request) -> JSONResponse:
    """Prospects ranked by IDF-weighted Jaccard overlap with the requested tags."""
    body = await read_json(request, SearchRequest)
    page = await services(request).prospects.search(body)
    return JSONResponse(page.model_dump(mode="json"))
