"""Validate and verify one address (emailintel's Validator and verify, errors as envelopes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from emailintel.errors import EmailIntelError
from emailintel.models import RiskResult, Verdict
from server.api.upstream import check_dns, check_smtp, library_error
from server.services import Services

if TYPE_CHECKING:
    from emailintel.verify import Validator

__all__ = ["ValidateRequest", "ValidateResponse", "validate", "verify"]


class ValidateRequest(BaseModel):
    """The address to check."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    email: str = Field(max_length=1000, description="The email address to check.")


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


async def validate(svc: Services, email: str) -> ValidateResponse:
    """Syntax, lists, typo and MX checks; a bad address is an answer (``invalid``), a failed DNS
    lookup a 503."""
    try:
        result = await svc.validator.validate(email)
    except EmailIntelError as exc:
        raise library_error(exc, param="email") from None
    check_dns(result.dns)
    return ValidateResponse.of(result)


def _library_validator(svc: Services) -> Validator:
    from emailintel.verify import Validator

    validator = svc.validator
    return validator if isinstance(validator, Validator) else Validator(resolver=svc.resolver)


async def verify(svc: Services, email: str) -> ValidateResponse:
    """Validation plus an SMTP mailbox probe; an unreachable or silent mail server is a 5xx."""
    from emailintel.verify import verify as verify_address

    try:
        result = await verify_address(email, prober=svc.prober, validator=_library_validator(svc))
    except EmailIntelError as exc:
        raise library_error(exc, param="email") from None
    check_dns(result.dns)
    check_smtp(result.smtp)
    return ValidateResponse.of(result)
