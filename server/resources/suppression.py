"""The suppression group: addresses and domains the user never mails. Adding is idempotent
(an existing entry answers 200, a new one 201); a CSV import adds many with per-line errors.
A domain entry covers its subdomains (see server.suppression.normalise)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_body, read_json
from server.errors import InvalidRequest, NotFound, RequestTooLarge
from server.http.keyed import KeyedContext
from server.http.pagination import paged_request
from server.jsontypes import NUL_FREE, never_null, not_null, nul_free
from server.resources._common import json_response, list_response, path_id
from server.suppression.csvimport import CsvProblem, file_from_body, parse_csv
from server.suppression.normalise import InvalidValue, normalise_domain, normalise_email
from server.suppression.store import KINDS, SOURCES, Entry, SuppressionStore

__all__ = [
    "AddSuppression",
    "CheckRequest",
    "CheckResult",
    "ImportResult",
    "SuppressionEntry",
    "SuppressionList",
    "add",
    "check",
    "delete",
    "import_csv",
    "list_entries",
]

Reason = Annotated[str, StringConstraints(max_length=500), NUL_FREE]
Source = Literal["manual", "import", "bounce", "unsubscribe"]


def _one_of(schema: dict[str, Any]) -> None:
    never_null("email", "domain")(schema)
    schema["oneOf"] = [
        {"required": ["email"], "not": {"required": ["domain"]}},
        {"required": ["domain"], "not": {"required": ["email"]}},
    ]


class AddSuppression(BaseModel):
    """An address (``email``) or a whole domain and its subdomains (``domain``)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_one_of)

    email: Annotated[str, StringConstraints(min_length=3, max_length=320)] | None = None
    domain: Annotated[str, StringConstraints(min_length=3, max_length=253)] | None = None
    reason: Reason | None = None
    source: Source = "manual"

    _present = field_validator("email", "domain", mode="before")(not_null)

    @model_validator(mode="after")
    def _one(self) -> AddSuppression:
        if (self.email is None) == (self.domain is None):
            raise ValueError("send email or domain, exactly one")
        return self


class SuppressionEntry(BaseModel):
    """A suppressed address or domain, normalised (lower case, IDNA ASCII)."""

    id: str
    object: str = "suppression"
    kind: str
    value: str
    reason: str | None
    source: str
    created: float

    @classmethod
    def of(cls, entry: Entry) -> SuppressionEntry:
        """From a store entry."""
        return cls(
            id=entry.id,
            kind=entry.kind,
            value=entry.value,
            reason=entry.reason,
            source=entry.source,
            created=entry.created_at,
        )


class SuppressionList(BaseModel):
    """A page of entries, newest first."""

    data: list[SuppressionEntry]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class LineErrorView(BaseModel):
    """A row not imported: its line (1-based), value, and why."""

    line: int
    value: str
    code: str
    message: str


class ImportResult(BaseModel):
    """What an import did: ``imported`` new entries, ``existing`` ones already listed,
    ``repeated`` values seen before in the file, ``invalid`` rows (the first 100 in ``errors``)."""

    rows: int
    imported: int
    existing: int
    repeated: int
    invalid: int
    errors: list[LineErrorView]
    errors_truncated: bool


def _store(ctx: KeyedContext) -> SuppressionStore:
    return SuppressionStore(ctx.services.db.engine)


async def add(request: Request, ctx: KeyedContext) -> Response:
    """Suppress an address or a domain; an entry already listed is returned as it is (200)."""
    body = await read_json(request, AddSuppression)
    try:
        if body.email is not None:
            kind, value = "email", normalise_email(body.email)
        else:
            kind, value = "domain", normalise_domain(body.domain or "")
    except InvalidValue as exc:
        param = "email" if body.email is not None else "domain"
        raise InvalidRequest(exc.code, f"Invalid {param}: {exc}", param=param) from None
    entry, created = await _store(ctx).add(
        ctx.user_id, kind, value, reason=body.reason, source=body.source
    )
    return json_response(SuppressionEntry.of(entry), status_code=201 if created else 200)


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid {name}: one of {', '.join(allowed)}.", param=name
        )
    return value


async def list_entries(request: Request, ctx: KeyedContext) -> Response:
    """The user's entries, newest first: ``search`` (part of the value), ``kind``, ``source``;
    ``limit`` with ``offset`` or ``cursor``, or ``page`` and ``page_size``."""
    page = paged_request(request.query_params)
    search = request.query_params.get("search") or request.query_params.get("q")
    search = nul_free(search) if search is not None else None
    if search is not None and len(search) > 320:
        raise InvalidRequest("parameter_invalid", "Invalid search: at most 320 characters.")
    rows = await _store(ctx).list(
        ctx.user_id,
        search=search,
        kind=_choice(request, "kind", KINDS),
        source=_choice(request, "source", SOURCES),
        limit=page.limit + 1,
        offset=page.offset,
        after=page.after,
    )
    return list_response(rows, page, SuppressionEntry.of, lambda e: e.id)


async def delete(request: Request, ctx: KeyedContext) -> Response:
    """Remove an entry (204): the address or domain may be mailed again."""
    entry_id = path_id(request, "entry_id", "sup", "suppression")
    if not await _store(ctx).delete(ctx.user_id, entry_id):
        raise NotFound("suppression_not_found", f"No suppression entry {entry_id!r}.")
    return Response(status_code=204)


async def import_csv(request: Request, ctx: KeyedContext) -> Response:
    """Import a CSV file (multipart ``file`` field, or a ``text/csv`` body) of addresses and
    domains: one column, or a header naming ``email``, ``domain`` or ``value``; at most 10,000
    rows and 1 MiB. ``source`` (default import) and ``reason`` come from form fields or the
    query string. Rows that are not addresses or domains are reported by line number."""
    raw = await read_body(request)
    try:
        data, fields = file_from_body(request.headers.get("content-type", ""), raw)
        parsed = parse_csv(data)
    except CsvProblem as exc:
        error = RequestTooLarge if exc.too_large else InvalidRequest
        raise error(exc.code, str(exc)) from None
    source = fields.get("source") or request.query_params.get("source") or "import"
    if source not in SOURCES:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid source: one of {', '.join(SOURCES)}.", param="source"
        )
    reason = nul_free(fields.get("reason") or request.query_params.get("reason") or "") or None
    if reason is not None and len(reason) > 500:
        raise InvalidRequest("parameter_invalid", "Invalid reason: at most 500 characters.")
    added = await _store(ctx).add_many(ctx.user_id, parsed.values, reason=reason, source=source)
    result = ImportResult(
        rows=parsed.rows,
        imported=len(added),
        existing=len(parsed.values) - len(added),
        repeated=parsed.repeated,
        invalid=parsed.error_count,
        errors=[LineErrorView(**vars(error)) for error in parsed.errors],
        errors_truncated=parsed.error_count > len(parsed.errors),
    )
    return json_response(result)


class CheckRequest(BaseModel):
    """Addresses to check against the list (at most 1,000)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    addresses: list[Annotated[str, StringConstraints(max_length=320)]] = Field(
        min_length=1, max_length=1000
    )


class CheckedAddress(BaseModel):
    """An address and the entry suppressing it (null: it may be mailed)."""

    address: str
    suppressed: bool
    entry: SuppressionEntry | None


class CheckResult(BaseModel):
    """Each address in the order given."""

    data: list[CheckedAddress]


async def check(request: Request, ctx: KeyedContext) -> Response:
    """Which of these addresses the list suppresses (the check send paths make): an address
    entry, else its domain's or a parent domain's. Values that are no address are not
    suppressed."""
    body = await read_json(request, CheckRequest)
    found = await _store(ctx).is_suppressed(ctx.user_id, body.addresses)
    return json_response(
        CheckResult(
            data=[
                CheckedAddress(
                    address=address,
                    suppressed=found[address] is not None,
                    entry=SuppressionEntry.of(entry) if (entry := found[address]) else None,
                )
                for address in body.addresses
            ]
        )
    )
