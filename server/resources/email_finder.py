"""The email-finder group's synchronous routes: person search (0 credits, monthly lookup limit),
a domain's learned pattern shares, the finder's statistics and health."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict
from starlette.requests import Request
from starlette.responses import Response

from emailintel.errors import AddressError, EmailIntelError, PersonNameError
from emailintel.patterns import PatternDistribution, generate_candidates, normalize_domain
from server.api.parsing import read_json
from server.api.upstream import library_error
from server.errors import NotFound, RateLimited, ServiceUnavailable
from server.http.keyed import KeyedContext
from server.jsontypes import NONBLANK, JsonInt
from server.prospects.models import ProspectOut
from server.resources import jobs
from server.resources._common import json_response
from server.usecases.email import ValidateRequest
from server.usecases.find import FindRequest

__all__ = ["SearchPerson", "SearchResult", "company", "health", "search", "stats"]

_DOMAIN = r"^[A-Za-z0-9.-]{1,253}$"


_ONE_PLACE: JsonDict = {
    "anyOf": [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("domain", "company")
    ]
}
"""A domain or a company, not null: the cross-field rule in the schema, so clients see it."""


class SearchPerson(BaseModel):
    """A person by name at a domain or a company (the domain is looked up from the pool)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra=_ONE_PLACE
    )

    first_name: str = Field(min_length=1, max_length=100, pattern=NONBLANK)
    last_name: str = Field(min_length=1, max_length=100, pattern=NONBLANK)
    domain: str | None = Field(default=None, min_length=1, max_length=253, pattern=NONBLANK)
    company: str | None = Field(default=None, min_length=1, max_length=200, pattern=NONBLANK)
    limit: JsonInt = Field(default=8, ge=1, le=20)

    @model_validator(mode="after")
    def _where(self) -> SearchPerson:
        if self.domain is None and self.company is None:
            raise ValueError("send a domain or a company")
        return self


class Prediction(BaseModel):
    """A guessed address and how likely the domain's pattern makes it."""

    email: str
    pattern: str
    confidence: float


class SearchResult(BaseModel):
    """A known profile, or predicted addresses ranked by the domain's learned patterns."""

    found: bool
    source: Literal["database", "predicted", "unresolved"]
    domain: str | None
    email: str | None
    profile: ProspectOut | None
    predictions: list[Prediction]
    evidence: int = Field(description="Confirmed addresses at the domain behind the shares.")
    lookups_remaining: int


def _month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _next_month_seconds() -> int:
    now = datetime.now(UTC)
    first = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return max(int(first.timestamp() - time.time()), 1)


async def search(request: Request, ctx: KeyedContext) -> Response:
    """A profile from the database if one matches, else predicted addresses with confidences.
    Costs no credits; counts against the plan's monthly lookups."""
    body = await read_json(request, SearchPerson)
    svc = ctx.services
    left = await ctx.keyed.accounts.count_lookup(
        ctx.user_id, _month(), ctx.principal.plan.monthly_lookups
    )
    if left is None:
        raise RateLimited(
            "lookup_limit_reached",
            f"The {ctx.principal.plan_name} plan's {ctx.principal.plan.monthly_lookups} monthly "
            "lookups are used up.",
            headers={"Retry-After": str(_next_month_seconds())},
        )
    named = body.domain or await svc.prospects.domain_for_company(body.company or "")
    try:
        domain = normalize_domain(named) if named is not None else None
    except EmailIntelError:  # not a mail domain: answered, as the paid find route does
        domain = None
    if domain is None:
        return json_response(
            SearchResult(
                found=False,
                source="unresolved",
                domain=None,
                email=None,
                profile=None,
                predictions=[],
                evidence=0,
                lookups_remaining=left,
            )
        )
    full = f"{body.first_name} {body.last_name}"
    profile = await svc.prospects.person(full, domain)
    confirmed = await svc.known.owner_address(domain, full)
    evidence = await svc.known.evidence(domain)
    try:
        guesses = generate_candidates(
            None,
            domain,
            first=body.first_name,
            last=body.last_name,
            known=evidence,
            limit=body.limit,
        )
    except (PersonNameError, AddressError):  # no address can be made of this name: answered
        guesses = []
    except EmailIntelError as exc:
        raise library_error(exc, param="first_name") from None
    email = confirmed or (profile.email if profile else None)
    return json_response(
        SearchResult(
            found=email is not None,
            source="database" if email is not None else "predicted",
            domain=domain,
            email=email,
            profile=profile,
            predictions=[
                Prediction(email=g.email, pattern=g.pattern, confidence=round(g.probability, 4))
                for g in guesses
            ],
            evidence=len(evidence),
            lookups_remaining=left,
        )
    )


class CompanyPatterns(BaseModel):
    """A domain's email pattern shares (percent), learned from confirmed finds."""

    domain: str
    patterns: PatternDistribution
    learned: bool = Field(description="False: no confirmed address yet, these are the priors.")


async def company(request: Request, ctx: KeyedContext) -> Response:
    """The domain's pattern shares: priors moved by every confirmed address there."""
    raw = str(request.path_params["domain"])
    try:
        domain = normalize_domain(raw)
    except EmailIntelError:
        raise NotFound("domain_not_found", f"Not a mail domain: {raw[:100]!r}.") from None
    shares = await ctx.services.known.distribution(domain)
    return json_response(
        CompanyPatterns(domain=domain, patterns=shares, learned=shares.observations > 0)
    )


class FinderStats(BaseModel):
    """What the finder knows."""

    known_addresses: int
    domains: int


async def stats(request: Request, ctx: KeyedContext) -> Response:
    """Counts of confirmed addresses and domains with learned patterns."""
    known = await ctx.services.known.stats()
    return json_response(FinderStats(known_addresses=known.addresses, domains=known.domains))


class FinderHealth(BaseModel):
    """The finder's dependencies."""

    status: Literal["ok"]
    database: Literal["ok"]
    smtp_probing: bool


async def health(request: Request, ctx: KeyedContext) -> Response:
    """Database reachable (503 if not); whether SMTP probing is configured here."""
    try:
        await ctx.services.db.ping()
    except Exception:
        raise ServiceUnavailable("database_unavailable", "The database is unreachable.") from None
    smtp = any(op.smtp for op in request.app.state.operations)
    return json_response(FinderHealth(status="ok", database="ok", smtp_probing=smtp))


# --- job routes: find, verify, bulk (charged at enqueue, settled when the job ends) -----------

FIND_STATUS = "/api/v1/email-finder/verify/{job_id}"
BULK_STATUS = "/api/v1/email-finder/bulk/{job_id}/status"
MAX_BULK_ROWS = 10_000
MAX_STATUS_ROWS = 1000


async def find(request: Request, ctx: KeyedContext) -> Response:
    """Queue a find: 3 credits, captured when the job answers (found or not), returned when it
    fails (mail server unreachable); poll ``/email-finder/verify/{job_id}``."""
    body = await read_json(request, FindRequest)
    return await jobs.enqueue_charged(
        ctx, "email.find", body.model_dump(exclude_none=True), status_url=FIND_STATUS
    )


class CachedVerification(BaseModel):
    """A verdict from the cache (free): the last verification of this address."""

    email: str
    cached: bool = True
    verified_at: float
    result: dict[str, Any]


async def verify(request: Request, ctx: KeyedContext) -> Response:
    """A verdict cached within its window is answered at once (200, free); otherwise an SMTP
    verification is queued (202, 1 credit, returned if the mail server cannot be reached)."""
    body = await read_json(request, ValidateRequest)
    cached = await ctx.services.verdicts.get(body.email)
    if cached is not None:
        return json_response(
            CachedVerification(
                email=body.email, verified_at=cached.verified_at, result=cached.result
            )
        )
    return await jobs.enqueue_charged(
        ctx, "email.verify", {"email": body.email}, status_url=FIND_STATUS
    )


async def verify_status(request: Request, ctx: KeyedContext) -> Response:
    """A find or verify job: status, and the result once it succeeded."""
    job = await jobs.job_of(ctx, str(request.path_params["job_id"]), ("email.find", "email.verify"))
    return await jobs.get_job_response(job)


class BulkRow(BaseModel):
    """A person: ``first_name`` + ``last_name`` (or ``name``), and ``domain`` or ``company``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    name: str | None = Field(default=None, max_length=200)
    domain: str | None = Field(default=None, max_length=253)
    company: str | None = Field(default=None, max_length=200)


class BulkFindRequest(BaseModel):
    """Rows to find addresses for (at most 10,000)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    rows: list[BulkRow] = Field(min_length=1, max_length=MAX_BULK_ROWS)


def _usable(row: BulkRow) -> dict[str, str] | None:
    """The row as a find job item, or None when it has no name or no domain/company."""
    first, last = (row.first_name or "").strip(), (row.last_name or "").strip()
    if not (first and last) and row.name:
        parts = row.name.split()
        if len(parts) >= 2:
            first, last = parts[0], parts[-1]
    domain, company = (row.domain or "").strip(), (row.company or "").strip()
    if not (first and last) or not (domain or company):
        return None
    item = {"first_name": first, "last_name": last}
    if domain:
        item["domain"] = domain
    else:
        item["company"] = company
    return item


async def bulk(request: Request, ctx: KeyedContext) -> Response:
    """Queue a bulk find: 3 credits per usable row reserved; rows without a name, or without a
    domain or company, are skipped uncharged (``skipped_invalid``); company-only rows whose
    domain cannot be resolved are skipped uncharged when the job runs (``skipped_unresolved``)."""
    body = await read_json(request, BulkFindRequest)
    items, invalid = [], []
    for index, row in enumerate(body.rows):
        usable = _usable(row)
        if usable is None:
            invalid.append(index)
        else:
            items.append({**usable, "row": index})
    return await jobs.enqueue_charged(
        ctx,
        "email.bulk_find",
        {"skipped_invalid": invalid[:MAX_STATUS_ROWS], "skipped_invalid_count": len(invalid)},
        units=len(items),
        items=items,
        status_url=BULK_STATUS,
    )


async def bulk_status(request: Request, ctx: KeyedContext) -> Response:
    """Counts of a bulk find, and its rows unless ``include_rows=false``."""
    job = await jobs.job_of(ctx, str(request.path_params["job_id"]), ("email.bulk_find",))
    return await jobs.rows_response(ctx, request, job)
