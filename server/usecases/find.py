"""Find a person's address: generated candidates (name and domain) or given ones, probed in order
by emailintel's finder; the first the mail server accepts wins (an accept at a catch-all domain,
or where the catch-all test was inconclusive, proves nothing and is not a find). Finds are
recorded in the server's confirmed addresses, which rank the next find's candidates there."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emailintel.errors import AddressError, EmailIntelError, PersonNameError
from emailintel.finder import CandidateStatus, FindResult
from server.api.upstream import check_dns, check_smtp, library_error
from server.jsontypes import NONBLANK
from server.services import Services

__all__ = ["FindAttempt", "FindRequest", "FindResponse", "find"]

MAX_CANDIDATES = 20
MAX_ADDRESS = 320


_NAMED = ("first_name", "last_name", "domain")
_NOT_NULL = (*_NAMED, "candidates")


def _find_schema(schema: dict[str, Any]) -> None:
    """Exactly one of the two forms, and fields that may be left out but are never null."""
    properties = schema["properties"]
    for name in _NOT_NULL:
        field = properties[name]
        [kept] = [branch for branch in field.pop("anyOf") if branch != {"type": "null"}]
        field.pop("default", None)
        field.update(kept)
    schema["oneOf"] = [
        {"required": list(_NAMED), "not": {"required": ["candidates"]}},
        {"required": ["candidates"], "not": {"anyOf": [{"required": [n]} for n in _NAMED]}},
    ]


class FindRequest(BaseModel):
    """A person at a domain (candidates are generated) or explicit candidate addresses."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra=_find_schema
    )

    first_name: str | None = Field(default=None, min_length=1, max_length=100, pattern=NONBLANK)
    last_name: str | None = Field(default=None, min_length=1, max_length=100, pattern=NONBLANK)
    domain: str | None = Field(default=None, min_length=1, max_length=253, pattern=NONBLANK)
    candidates: list[Annotated[str, Field(max_length=MAX_ADDRESS)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="Addresses to try in this order (instead of a name and domain).",
    )

    @field_validator(*_NOT_NULL, mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> FindRequest:
        named = (self.first_name, self.last_name, self.domain)
        if self.candidates is not None:
            if any(part is not None for part in named):
                raise ValueError("send candidates or first_name/last_name/domain, not both")
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


_ATTEMPT: dict[CandidateStatus, AttemptStatus] = {
    "accepted": "accepted",
    "catch_all": "catch_all",
    "rejected": "rejected",
    "invalid": "invalid",
    "undeliverable": "invalid",
    "unproven": "unknown",  # accepted while the catch-all test was inconclusive: no find
    "unknown": "unknown",
    "not_probed": "unknown",
}


async def _search(svc: Services, body: FindRequest) -> FindResult | None:
    """emailintel's finder over the server's prober, resolver and confirmed addresses; None
    when the name or domain cannot make an address (answered with no attempts)."""
    from emailintel.finder import Finder
    from server.finder.store import KnownPatternStore

    param = "candidates" if body.candidates is not None else None
    try:
        finder = Finder(
            prober=svc.prober, resolver=svc.resolver, store=KnownPatternStore(svc.known)
        )
        if body.candidates is not None:
            return await finder.find_candidates(body.candidates)
        assert body.first_name is not None
        assert body.last_name is not None
        assert body.domain is not None
        try:
            return await finder.find(body.first_name, body.last_name, body.domain)
        except (PersonNameError, AddressError):  # no usable name, or not a mail domain
            return None
    except EmailIntelError as exc:
        raise library_error(exc, param=param) from None


def _check_upstream(result: FindResult) -> None:
    """A DNS failure, or SMTP that answered nothing at all, is the upstream's fault (5xx)."""
    for dns in result.lookups:
        check_dns(dns)
    facts = [c.smtp for c in result.candidates if c.smtp is not None]
    answered = [f for f in facts if f.checked]
    if facts and not any(f.accepted is not None or f.mailbox_not_found for f in answered):
        for probe in facts:
            check_smtp(probe)


async def find(svc: Services, body: FindRequest) -> FindResponse:
    """Probe the candidates in order (emailintel's finder); the first accepted one at a domain
    that does not accept everything wins. A name or domain no address can be made of is
    answered with no attempts; an unreachable mail server is a 5xx."""
    result = await _search(svc, body)
    if result is None:
        return FindResponse(found=False, catch_all=False, attempts=[])
    _check_upstream(result)
    attempts = [
        FindAttempt(email=c.email, pattern=c.pattern, status=_ATTEMPT[c.status])
        for c in result.candidates
    ]
    if result.found:
        winner = next(i for i, c in enumerate(result.candidates) if c.status == "accepted")
        attempts = attempts[: winner + 1]  # later guesses were never probed
    return FindResponse(
        found=result.found,
        email=result.email,
        pattern=result.pattern,
        probability=result.probability,
        catch_all=any(a.status == "catch_all" for a in attempts),
        attempts=attempts,
    )
