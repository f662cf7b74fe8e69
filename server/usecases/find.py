"""Find a person's address: generated candidates (name and domain) or given ones, probed in order
over one SMTP session per domain; the first the mail server accepts wins (a catch-all domain's
accept proves nothing and is not a find)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emailintel import probe_domain
from emailintel.errors import AddressError, EmailIntelError, PersonNameError
from emailintel.models import SmtpFacts
from server.api.upstream import check_dns, check_smtp, library_error
from server.jsontypes import NONBLANK
from server.services import Services

__all__ = ["FindAttempt", "FindRequest", "FindResponse", "find"]

MAX_CANDIDATES = 20
GENERATED_CANDIDATES = 10
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


Guess = tuple[str, str | None, float | None]
"""(address, template, prior probability) of one candidate."""


def _guesses(body: FindRequest) -> list[Guess]:
    """The candidates to try; none when the name or domain cannot make an address (answered)."""
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
    except (PersonNameError, AddressError):  # no usable name, or not a mail domain
        return []
    except EmailIntelError as exc:
        raise library_error(exc) from None
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


def _by_domain(guesses: list[Guess]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each parseable guess's RCPT address, and those addresses grouped by ASCII domain."""
    from emailintel.address import parse_address

    rcpt: dict[str, str] = {}
    by_domain: dict[str, list[str]] = {}
    for email, _, _ in guesses:
        try:
            parsed = parse_address(email)
        except AddressError:
            continue  # answered as "invalid"
        except EmailIntelError as exc:
            raise library_error(exc, param="candidates") from None
        rcpt[email] = parsed.ascii_email or f"{parsed.local_part}@{parsed.ascii_domain}"
        by_domain.setdefault(parsed.ascii_domain, []).append(rcpt[email])
    return rcpt, by_domain


async def _probe(
    svc: Services, by_domain: dict[str, list[str]]
) -> tuple[dict[str, SmtpFacts], set[str]]:
    """SMTP facts per RCPT address, and the addresses at domains that cannot receive mail."""
    facts: dict[str, SmtpFacts] = {}
    undeliverable: set[str] = set()
    try:
        prober = svc.prober
        for domain, addresses in by_domain.items():
            dns, found = await probe_domain(
                domain, addresses, resolver=svc.resolver, prober=prober, stop_on_accept=True
            )
            check_dns(dns)
            if dns.status == "ok":
                facts.update(found)
            else:
                undeliverable.update(addresses)
    except EmailIntelError as exc:
        raise library_error(exc, param="candidates") from None
    return facts, undeliverable


async def find(svc: Services, body: FindRequest) -> FindResponse:
    """Probe the candidates in order; the first accepted one wins. A name or domain no address
    can be made of is answered with no attempts; an unreachable mail server is a 5xx."""
    guesses = _guesses(body)
    rcpt, by_domain = _by_domain(guesses)
    facts, undeliverable = await _probe(svc, by_domain)
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
            check_smtp(probe)
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
    return response
