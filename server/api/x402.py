"""Handlers of the wallet-paid routes (``/api/x402/v1``); the payment gate wraps them, not here.

A question answered (even "this address is invalid") is a 200 and gets charged; a failure of an
upstream we depend on (DNS, SMTP, search backend) is an error envelope, which the gate never
settles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.config import JsonDict
from starlette.requests import Request
from starlette.responses import JSONResponse

from emailintel.errors import (
    AddressError,
    ConfigError,
    PersonNameError,
    SearchQueryError,
    SearchRateLimited,
    SearchUnavailable,
)
from emailintel.models import DnsFacts, RiskResult, SmtpFacts, Verdict
from emailintel.search.models import LinkedInResult
from server.api.parsing import read_json
from server.errors import ApiError, InvalidRequest
from server.prospects.models import SearchRequest
from server.services import Services, services

if TYPE_CHECKING:
    from emailintel.verify import Validator

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

MAX_CANDIDATES = 20
GENERATED_CANDIDATES = 10


class UpstreamError(ApiError):
    """A dependency (DNS, SMTP, search backend) failed; the request was not answered or charged."""

    status = 503
    type = "api_error"


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


_NAMED: list[JsonValue] = ["first_name", "last_name", "domain"]
_ONE_FORM: JsonDict = {
    "oneOf": [
        {"required": _NAMED, "not": {"required": ["candidates"]}},
        {
            "required": ["candidates"],
            "not": {"anyOf": [{"required": [name]} for name in _NAMED]},
        },
    ]
}


class FindRequest(BaseModel):
    """A person at a domain (candidates are generated) or explicit candidate addresses."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=_ONE_FORM)

    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    domain: str | None = Field(default=None, min_length=1, max_length=253)
    candidates: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="Addresses to try in this order (instead of a name and domain).",
    )

    @model_validator(mode="after")
    def _one_form(self) -> FindRequest:
        named = (self.first_name, self.last_name, self.domain)
        if self.candidates is not None:
            if any(part is not None for part in named):
                raise ValueError("send candidates or first_name/last_name/domain, not both")
            if any(len(c) > 320 for c in self.candidates):
                raise ValueError("a candidate is longer than 320 characters")
        elif any(part is None for part in named):
            raise ValueError("first_name, last_name and domain are required without candidates")
        return self


AttemptStatus = Literal["accepted", "rejected", "catch_all", "unknown", "invalid"]


class FindAttempt(BaseModel):
    """One candidate tried, and what the mail server said about it."""

    email: str
    pattern: str | None = None
    status: AttemptStatus


class FindResponse(BaseModel):
    """The first candidate the mail server accepted, or ``found: false``."""

    found: bool
    email: str | None = None
    pattern: str | None = Field(default=None, description="The template, for generated guesses.")
    probability: float | None = Field(default=None, description="Prior of the found guess.")
    catch_all: bool = Field(description="A domain accepted everything, so no guess is proven.")
    attempts: list[FindAttempt]


class LinkedInRequest(BaseModel):
    """The person to look for: name and company, optionally title and location."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=200)
    company: str = Field(min_length=1, max_length=200)
    title: str | None = Field(default=None, max_length=200)
    location: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=5, ge=1, le=10)


class LinkedInResponse(LinkedInResult):
    """Ranked profile candidates with a 0-1 score and the evidence behind each."""


def _check_dns(dns: DnsFacts | None) -> None:
    if dns is not None and dns.status in ("timeout", "error"):
        raise UpstreamError("dns_unavailable", f"DNS lookup for {dns.domain} failed; not charged.")


def _check_smtp(smtp: SmtpFacts | None) -> None:
    if smtp is None:
        return
    if smtp.timed_out:
        raise UpstreamError("smtp_timeout", "The mail server timed out; not charged.", status=504)
    if smtp.connect_failed or smtp.proxy_error:
        raise UpstreamError("smtp_unavailable", "The mail server was unreachable; not charged.")


def _not_configured(exc: ConfigError) -> UpstreamError:
    return UpstreamError("not_configured", f"The server is not configured for this route: {exc}")


async def validate_email(request: Request) -> JSONResponse:
    """Syntax, lists, typo and MX checks; bad addresses are answered (risk_level ``invalid``)."""
    body = await read_json(request, ValidateRequest)
    result = await services(request).validator.validate(body.email)
    _check_dns(result.dns)
    return JSONResponse(ValidateResponse.of(result).model_dump(mode="json"))


def _library_validator(svc: Services) -> Validator:
    from emailintel.verify import Validator

    validator = svc.validator
    return validator if isinstance(validator, Validator) else Validator(resolver=svc.resolver)


async def verify_email(request: Request) -> JSONResponse:
    """Validation plus an SMTP mailbox probe; unreachable or timed-out mail servers are not charged."""
    from emailintel.verify import verify

    body = await read_json(request, ValidateRequest)
    svc = services(request)
    try:
        result = await verify(body.email, prober=svc.prober, validator=_library_validator(svc))
    except ConfigError as exc:
        raise _not_configured(exc) from None
    _check_dns(result.dns)
    _check_smtp(result.smtp)
    return JSONResponse(ValidateResponse.of(result).model_dump(mode="json"))


def _guesses(body: FindRequest) -> list[tuple[str, str | None, float | None]]:
    from emailintel.patterns import generate_candidates

    if body.candidates is not None:
        return [(c, None, None) for c in dict.fromkeys(body.candidates)]
    assert body.domain is not None
    try:
        found = generate_candidates(
            None,
            body.domain,
            first=body.first_name,
            last=body.last_name,
            limit=GENERATED_CANDIDATES,
        )
    except (PersonNameError, AddressError, ConfigError) as exc:
        raise InvalidRequest("parameter_invalid", f"Cannot build candidates: {exc}.") from None
    return [(c.email, c.pattern, c.probability) for c in found]


def _status(facts: SmtpFacts | None) -> AttemptStatus:
    if facts is None or not facts.checked:
        return "unknown"
    if facts.catch_all or facts.provider_accepts_all:
        return "catch_all"
    if facts.accepted:
        return "accepted"
    if facts.mailbox_not_found or facts.mailbox_disabled:
        return "rejected"
    return "unknown"


async def find_email(request: Request) -> JSONResponse:
    """Probe candidates in order over one SMTP session per domain; the first accepted one wins."""
    from emailintel.address import parse_address

    body = await read_json(request, FindRequest)
    svc = services(request)
    guesses = _guesses(body)
    by_domain: dict[str, list[str]] = {}
    rcpt: dict[str, str] = {}
    for email, _, _ in guesses:
        try:
            parsed = parse_address(email)
        except AddressError:
            continue
        rcpt[email] = parsed.ascii_email or f"{parsed.local_part}@{parsed.ascii_domain}"
        by_domain.setdefault(parsed.ascii_domain, []).append(rcpt[email])
    facts: dict[str, SmtpFacts] = {}
    undeliverable: set[str] = set()  # addresses at domains that cannot receive mail
    try:
        prober = svc.prober
        for domain, addresses in by_domain.items():
            dns = await svc.resolver.lookup_mx(domain, resolve_addresses=True)
            _check_dns(dns)
            if dns.status == "ok":
                facts.update(await prober.probe(domain, addresses, dns, stop_on_accept=True))
            else:
                undeliverable.update(addresses)
    except ConfigError as exc:
        raise _not_configured(exc) from None
    attempts = [
        FindAttempt(
            email=email,
            pattern=pattern,
            status="invalid"
            if email not in rcpt or rcpt[email] in undeliverable
            else _status(facts.get(rcpt[email])),
        )
        for email, pattern, _ in guesses
    ]
    answered = [facts[a] for a in facts if facts[a].checked]
    if facts and not any(f.accepted is not None or f.mailbox_not_found for f in answered):
        for probe in facts.values():
            _check_smtp(probe)
    winner = next((i for i, a in enumerate(attempts) if a.status == "accepted"), None)
    if winner is not None:
        attempts = attempts[: winner + 1]  # later guesses were never probed
    response = FindResponse(
        found=winner is not None,
        email=guesses[winner][0] if winner is not None else None,
        pattern=guesses[winner][1] if winner is not None else None,
        probability=guesses[winner][2] if winner is not None else None,
        catch_all=any(a.status == "catch_all" for a in attempts),
        attempts=attempts,
    )
    return JSONResponse(response.model_dump(mode="json"))


async def find_linkedin_url(request: Request) -> JSONResponse:
    """Search-engine results scored against the person; rate limits and outages are not charged."""
    from emailintel.search.finder import find_linkedin

    body = await read_json(request, LinkedInRequest)
    svc = services(request)
    try:
        result = await find_linkedin(
            body.name,
            body.company,
            title=body.title,
            location=body.location,
            engine=svc.search,
            limit=body.limit,
        )
    except (SearchQueryError, PersonNameError) as exc:
        raise InvalidRequest("parameter_invalid", f"{exc}.") from None
    except SearchRateLimited as exc:
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        raise UpstreamError(
            "search_rate_limited", f"The search backend is rate-limiting: {exc}", headers=headers
        ) from None
    except SearchUnavailable as exc:
        raise UpstreamError(
            "search_unavailable", f"The search backend failed: {exc}", status=502
        ) from None
    except ConfigError as exc:
        raise _not_configured(exc) from None
    return JSONResponse(
        LinkedInResponse.model_validate(result.model_dump()).model_dump(mode="json")
    )


async def prospects_search(request: Request) -> JSONResponse:
    """Prospects ranked by IDF-weighted Jaccard overlap with the requested tags."""
    body = await read_json(request, SearchRequest)
    page = await services(request).prospects.search(body)
    return JSONResponse(page.model_dump(mode="json"))
