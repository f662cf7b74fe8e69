"""BaviMail sending domains and aliases: add a domain (its DNS records), check and verify it
through emailintel's resolver, rotate its DKIM key; addresses on verified domains."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.ids import is_id
from server.mail.dns_check import RecordCheck, check_records, verdict
from server.mail.dns_records import DnsRecord, normalise_domain, records_for
from server.mail.lookup import look_up
from server.mail.store import (
    AliasExists,
    AliasRecord,
    DomainExists,
    DomainInUse,
    DomainLimitReached,
    DomainNotVerified,
    DomainRecord,
    MailStore,
    RotationPending,
)
from server.resources._common import json_response, list_response, path_id

__all__ = [
    "AliasList",
    "AliasView",
    "CreateAlias",
    "CreateDomain",
    "Deleted",
    "DnsStatus",
    "DomainList",
    "DomainSetup",
    "DomainView",
    "UpdateAlias",
    "UpdateDomain",
]

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_PATTERN = rf"^({_LABEL}\.)+{_TLD}\.?$"
"""Two or more LDH labels, the last one starting with a letter (IDNs in their xn-- form)."""
LOCAL_PART_PATTERN = rf"^[{_ATEXT}]+(\.[{_ATEXT}]+)*$"
ADDRESS_PATTERN = rf"^[{_ATEXT}]([.{_ATEXT}]{{0,62}}[{_ATEXT}])?@({_LABEL}\.)+{_TLD}$"
_HEADER_UNSAFE = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
DISPLAY_NAME_PATTERN = rf"^[^{_HEADER_UNSAFE} ]([^{_HEADER_UNSAFE}]*[^{_HEADER_UNSAFE} ])?$"
"""No control or line-break characters (the value goes into a mail header), no outer spaces."""


def _domain_name(value: str) -> str:
    name = normalise_domain(value)
    if name is None:
        raise ValueError("must be a domain name such as example.com (IDNs in xn-- form)")
    return name


def _address(value: str) -> str:
    local, _, domain = value.rpartition("@")
    name = normalise_domain(domain)
    if name is None:
        raise ValueError("must be an address such as name@example.com")
    return f"{local}@{name}"


_DOMAIN_DOC = "A domain name such as example.com (IDNs in xn-- form)."
DomainName = Annotated[
    str,
    Field(min_length=3, max_length=253, pattern=DOMAIN_PATTERN, description=_DOMAIN_DOC),
    AfterValidator(_domain_name),
]
DisplayName = Annotated[str, Field(min_length=1, max_length=100, pattern=DISPLAY_NAME_PATTERN)]
Address = Annotated[
    str, Field(min_length=3, max_length=254, pattern=ADDRESS_PATTERN), AfterValidator(_address)
]
LocalPart = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=LOCAL_PART_PATTERN),
    AfterValidator(str.lower),
]


class CreateDomain(BaseModel):
    """A domain to send from; ``inbound`` also receives mail for it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: DomainName
    tracking: bool = False
    inbound: bool = False


class UpdateDomain(BaseModel):
    """Switch open/click tracking or inbound mail (omitted fields stay)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tracking: bool | None = None
    inbound: bool | None = None


class RecordView(BaseModel):
    """A record to publish; ``required`` ones decide verification."""

    purpose: str
    type: str
    name: str
    value: str
    priority: int | None
    required: bool
    selector: str | None

    @classmethod
    def of(cls, record: DnsRecord) -> RecordView:
        """From the pure record."""
        return cls(
            purpose=record.purpose,
            type=record.type,
            name=record.name,
            value=record.value,
            priority=record.priority,
            required=record.required,
            selector=record.selector,
        )


class RecordCheckView(RecordView):
    """A record with what DNS answered and its status."""

    status: str
    found: list[str]
    detail: str | None

    @classmethod
    def of_check(cls, check: RecordCheck) -> RecordCheckView:
        """From the pure check."""
        return cls(
            **RecordView.of(check.record).model_dump(),
            status=check.status,
            found=list(check.found),
            detail=check.detail,
        )


class DkimKeyView(BaseModel):
    """A DKIM key's selector and state (active signs; pending waits to be published;
    retiring stays published until retired)."""

    selector: str
    state: str
    created_at: float


class DomainView(BaseModel):
    """A sending domain, the records it publishes and its last check."""

    id: str
    object: str = "bavimail_domain"
    name: str
    status: str
    tracking: bool
    inbound: bool
    dkim_selector: str | None
    dkim_keys: list[DkimKeyView]
    records: list[RecordView]
    last_check: list[dict[str, Any]] | None
    checked_at: float | None
    verified_at: float | None
    created_at: float
    updated_at: float


class DomainList(BaseModel):
    """A page of the caller's domains, newest first."""

    data: list[DomainView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class DomainSetup(BaseModel):
    """The records to publish for a domain."""

    domain_id: str
    name: str
    records: list[RecordView]


class DnsStatus(BaseModel):
    """DNS as looked up now, record by record; ``status`` is ``verified`` when every required
    record is ok (``lookup_failed``: DNS could not be asked)."""

    domain_id: str
    name: str
    status: str
    records: list[RecordCheckView]


class Deleted(BaseModel):
    """What was deleted."""

    id: str
    object: str
    deleted: bool = True


class ForwardRule(BaseModel):
    """Forward mail received at the alias to ``to`` (when ``enabled``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    to: Address
    enabled: bool = True


class CreateAlias(BaseModel):
    """An address ``local_part@<domain>`` on a verified domain."""

    model_config = ConfigDict(extra="forbid", strict=True)

    domain_id: str = Field(min_length=1, max_length=40)
    local_part: LocalPart
    display_name: DisplayName | None = None
    reply_to: Address | None = None
    forwarding: list[ForwardRule] = Field(default_factory=list, max_length=10)


class UpdateAlias(BaseModel):
    """Change the display name, reply-to or forwarding (null clears the first two)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    display_name: DisplayName | None = None
    reply_to: Address | None = None
    forwarding: list[ForwardRule] | None = Field(default=None, max_length=10)


class AliasView(BaseModel):
    """An address on a domain."""

    id: str
    object: str = "bavimail_alias"
    domain_id: str
    address: str
    local_part: str
    display_name: str | None
    reply_to: str | None
    forwarding: list[dict[str, Any]]
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, record: AliasRecord) -> AliasView:
        """From a store record."""
        return cls(
            id=record.id,
            domain_id=record.domain_id,
            address=record.address,
            local_part=record.local_part,
            display_name=record.display_name,
            reply_to=record.reply_to,
            forwarding=record.forwarding,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class AliasList(BaseModel):
    """A page of the caller's aliases, newest first."""

    data: list[AliasView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


def _store(ctx: KeyedContext) -> MailStore:
    return ctx.services.mail


def _records(ctx: KeyedContext, record: DomainRecord) -> tuple[DnsRecord, ...]:
    return records_for(
        record.name, record.keys, ctx.services.settings.mail_config(), inbound=record.inbound
    )


def _view(ctx: KeyedContext, record: DomainRecord) -> DomainView:
    active = record.active_key
    return DomainView(
        id=record.id,
        name=record.name,
        status=record.status,
        tracking=record.tracking,
        inbound=record.inbound,
        dkim_selector=active.selector if active else None,
        dkim_keys=[
            DkimKeyView(selector=k.selector, state=k.state, created_at=k.created_at)
            for k in record.keys
        ],
        records=[RecordView.of(r) for r in _records(ctx, record)],
        last_check=record.checks,
        checked_at=record.checked_at,
        verified_at=record.verified_at,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _not_found(domain_id: str) -> NotFound:
    return NotFound("domain_not_found", f"No domain {domain_id!r}.")


async def _owned(ctx: KeyedContext, request: Request) -> DomainRecord:
    domain_id = path_id(request, "domain_id", "dom", "domain")
    record = await _store(ctx).domain(ctx.user_id, domain_id)
    if record is None:
        raise _not_found(domain_id)
    return record


async def _checks(ctx: KeyedContext, record: DomainRecord) -> tuple[RecordCheck, ...]:
    records = _records(ctx, record)
    answers = await look_up(ctx.services.resolver, records)
    return check_records(records, answers)


async def create_domain(request: Request, ctx: KeyedContext) -> Response:
    """Add a sending domain: a fresh DKIM key and the records to publish."""
    body = await read_json(request, CreateDomain)
    try:
        record = await _store(ctx).create_domain(
            ctx.user_id, body.name, tracking=body.tracking, inbound=body.inbound
        )
    except DomainExists:
        raise Conflict("domain_exists", f"You already added {body.name}.") from None
    except DomainLimitReached:
        raise Conflict("too_many_domains", "Domain limit reached; delete one first.") from None
    return json_response(_view(ctx, record), status_code=201)


async def list_domains(request: Request, ctx: KeyedContext) -> Response:
    """The caller's domains, newest first."""
    page = page_request(request.query_params)
    rows = await _store(ctx).domains(
        ctx.user_id, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(rows, page, lambda r: _view(ctx, r), lambda r: r.id)


async def get_domain(request: Request, ctx: KeyedContext) -> Response:
    """One of the caller's domains."""
    return json_response(_view(ctx, await _owned(ctx, request)))


async def domain_setup(request: Request, ctx: KeyedContext) -> Response:
    """The records to publish for the domain."""
    record = await _owned(ctx, request)
    records = [RecordView.of(r) for r in _records(ctx, record)]
    return json_response(DomainSetup(domain_id=record.id, name=record.name, records=records))


async def dns_status(request: Request, ctx: KeyedContext) -> Response:
    """Look the records up now and compare them (nothing is stored)."""
    record = await _owned(ctx, request)
    checks = await _checks(ctx, record)
    return json_response(
        DnsStatus(
            domain_id=record.id,
            name=record.name,
            status=verdict(checks),
            records=[RecordCheckView.of_check(c) for c in checks],
        )
    )


async def verify_domain(request: Request, ctx: KeyedContext) -> Response:
    """Look the records up, store the result, and mark the domain verified when the required
    ones are ok (a published pending DKIM key becomes the active one)."""
    record = await _owned(ctx, request)
    checks = await _checks(ctx, record)
    pending_ok = any(c.record.purpose == "dkim_pending" and c.status == "ok" for c in checks)
    stored = await _store(ctx).record_check(
        ctx.user_id,
        record.id,
        [RecordCheckView.of_check(c).model_dump(mode="json") for c in checks],
        verdict(checks),
        pending_ok=pending_ok,
    )
    if stored is None:
        raise _not_found(record.id)
    return json_response(_view(ctx, stored))


async def update_domain(request: Request, ctx: KeyedContext) -> Response:
    """Switch tracking or inbound."""
    record = await _owned(ctx, request)
    body = await read_json(request, UpdateDomain)
    updated = await _store(ctx).update_domain(
        ctx.user_id, record.id, tracking=body.tracking, inbound=body.inbound
    )
    if updated is None:
        raise _not_found(record.id)
    return json_response(_view(ctx, updated))


async def delete_domain(request: Request, ctx: KeyedContext) -> Response:
    """Delete the domain and its aliases (refused while something still sends from it)."""
    record = await _owned(ctx, request)
    try:
        deleted = await _store(ctx).delete_domain(ctx.user_id, record.id)
    except DomainInUse as exc:
        raise Conflict(
            "domain_in_use", "The domain is in use: " + "; ".join(exc.reasons)[:500] + "."
        ) from None
    if deleted is None:
        raise _not_found(record.id)
    return json_response(Deleted(id=record.id, object="bavimail_domain"))


async def rotate_dkim(request: Request, ctx: KeyedContext) -> Response:
    """Start a DKIM key rotation: a new key under a new selector, pending until its record
    verifies; the old key then retires but stays listed until retired."""
    record = await _owned(ctx, request)
    try:
        rotated = await _store(ctx).rotate_key(ctx.user_id, record.id)
    except RotationPending:
        raise Conflict(
            "rotation_pending", "A rotated key waits to be published; verify the domain first."
        ) from None
    if rotated is None:
        raise _not_found(record.id)
    return json_response(_view(ctx, rotated))


async def retire_dkim(request: Request, ctx: KeyedContext) -> Response:
    """Forget the retiring DKIM keys (their records can then be removed)."""
    record = await _owned(ctx, request)
    retired = await _store(ctx).retire_keys(ctx.user_id, record.id)
    if retired is None:
        raise _not_found(record.id)
    return json_response(_view(ctx, retired))


def _alias_not_found(alias_id: str) -> NotFound:
    return NotFound("alias_not_found", f"No alias {alias_id!r}.")


async def create_alias(request: Request, ctx: KeyedContext) -> Response:
    """Add an address on one of the caller's verified domains."""
    body = await read_json(request, CreateAlias)
    try:
        record = await _store(ctx).create_alias(
            ctx.user_id,
            body.domain_id,
            body.local_part,
            display_name=body.display_name,
            reply_to=body.reply_to,
            forwarding=[rule.model_dump() for rule in body.forwarding],
        )
    except DomainNotVerified:
        raise Conflict(
            "domain_not_verified", "Verify the domain before adding addresses to it."
        ) from None
    except AliasExists:
        raise Conflict("alias_exists", f"The domain already has {body.local_part}@.") from None
    except DomainLimitReached:
        raise Conflict("too_many_aliases", "Alias limit of this domain reached.") from None
    if record is None:
        raise NotFound("domain_not_found", f"No domain {body.domain_id!r}.")
    return json_response(AliasView.of(record), status_code=201)


async def list_aliases(request: Request, ctx: KeyedContext) -> Response:
    """The caller's aliases (``domain_id`` narrows to one domain), newest first."""
    page = page_request(request.query_params)
    domain_id = request.query_params.get("domain_id")
    if domain_id is not None and not is_id(domain_id, "dom"):
        raise InvalidRequest(
            "parameter_invalid", "domain_id must be a domain id (dom_…).", param="domain_id"
        )
    rows = await _store(ctx).aliases(
        ctx.user_id,
        limit=page.limit + 1,
        offset=page.offset,
        after=page.after,
        domain_id=domain_id,
    )
    return list_response(rows, page, AliasView.of, lambda r: r.id)


async def _owned_alias(ctx: KeyedContext, request: Request) -> AliasRecord:
    alias_id = path_id(request, "alias_id", "alias", "alias")
    record = await _store(ctx).alias(ctx.user_id, alias_id)
    if record is None:
        raise _alias_not_found(alias_id)
    return record


async def get_alias(request: Request, ctx: KeyedContext) -> Response:
    """One of the caller's aliases."""
    return json_response(AliasView.of(await _owned_alias(ctx, request)))


async def update_alias(request: Request, ctx: KeyedContext) -> Response:
    """Change an alias's display name, reply-to or forwarding."""
    record = await _owned_alias(ctx, request)
    body = await read_json(request, UpdateAlias)
    changes: dict[str, Any] = {}
    for name in ("display_name", "reply_to"):
        if name in body.model_fields_set:
            changes[name] = getattr(body, name)
    if body.forwarding is not None:
        changes["forwarding"] = [rule.model_dump() for rule in body.forwarding]
    updated = await _store(ctx).update_alias(ctx.user_id, record.id, changes)
    if updated is None:
        raise _alias_not_found(record.id)
    return json_response(AliasView.of(updated))


async def delete_alias(request: Request, ctx: KeyedContext) -> Response:
    """Delete an alias."""
    record = await _owned_alias(ctx, request)
    if await _store(ctx).delete_alias(ctx.user_id, record.id) is None:
        raise _alias_not_found(record.id)
    return json_response(Deleted(id=record.id, object="bavimail_alias"))
