"""Handlers of the wallet-paid routes (``/api/x402/v1``); the payment gate wraps them, not here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from emailintel.models import RiskResult, Verdict
from server.api.parsing import read_json
from server.prospects.models import SearchRequest
from server.services import services

__all__ = ["ValidateRequest", "ValidateResponse", "prospects_search", "validate_email"]


class ValidateRequest(BaseModel):
    """The address to check."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    email: str = Field(max_length=1000, description="The email address to validate.")


class ValidateResponse(RiskResult):
    """emailintel's result plus ``risk_level`` (the verdict) and the MX host names, best first."""

    risk_level: Verdict
    mx_hosts: list[str]

    @classmethod
    def of(cls, result: RiskResult) -> ValidateResponse:
        """Wrap a :class:`RiskResult`."""
        hosts = (
            [mx.host for mx in sorted(result.dns.mx, key=lambda m: m.preference)]
            if result.dns
            else []
        )
        return cls.model_validate(
            {**result.model_dump(), "risk_level": result.verdict, "mx_hosts": hosts}
        )


async def validate_email(request: Request) -> JSONResponse:
    """Syntax, lists, typo and MX checks; bad addresses are answered (risk_level ``invalid``)."""
    body = await read_json(request, ValidateRequest)
    result = await services(request).validator.validate(body.email)
    return JSONResponse(ValidateResponse.of(result).model_dump(mode="json"))


async def prospects_search(request: Request) -> JSONResponse:
    """Prospects ranked by IDF-weighted Jaccard overlap with the requested tags."""
    body = await read_json(request, SearchRequest)
    page = await services(request).prospects.search(body)
    return JSONResponse(page.model_dump(mode="json"))
