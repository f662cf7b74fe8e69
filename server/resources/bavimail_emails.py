"""BaviMail sending: ``POST /bavimail/emails`` queues a signed message in the outbox; list, get
and cancel (until the hand-off to the relay; 409 after)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.errors import Conflict, InvalidRequest, NotFound, RateLimited, Unprocessable
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.mail.inbound_parse import parse_message_ids
from server.mail.message import MAX_UNSUBSCRIBE_URL, Attachment, Draft, MessageError
from server.mail.outbox import MailRecord
from server.mail.outbox_rules import State
from server.mail.ports import SenderNotAllowed
from server.mail.service import CapReached
from server.mail.tracking_store import TrackingStore
from server.resources._common import json_response, list_response, path_id

_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A tag filter, as tags are given (``_`` and ``-`` alone are tags too)."""

__all__ = ["EmailList", "EmailView", "SendEmail", "cancel", "get_email", "list_emails", "send"]

MAX_SCHEDULE_SECONDS = 30 * 86400
_Address = Annotated[str, Field(min_length=3, max_length=520)]
_Addresses = _Address | Annotated[list[_Address], Field(max_length=50)]


class AttachmentIn(BaseModel):
    """One attachment: a file name, base64 content and its content type."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(max_length=1_000_000, description="Base64 of the file.")
    content_type: str | None = Field(default=None, max_length=127)


class SendEmail(BaseModel):
    """A message to send from an address on one of the caller's verified domains."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: _Address = Field(alias="from", description="`addr` or `Name <addr>`.")
    to: _Addresses
    cc: _Addresses | None = None
    bcc: _Addresses | None = None
    reply_to: _Addresses | None = None
    subject: str = Field(max_length=998)
    text: str | None = Field(default=None, max_length=512 * 1024)
    html: str | None = Field(default=None, max_length=512 * 1024)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=10)
    headers: dict[str, Annotated[str, Field(max_length=998)]] = Field(
        default_factory=dict, max_length=20, description="X-* and a few others (not structural)."
    )
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=10)
    list_unsubscribe_url: str | None = Field(
        default=None,
        max_length=MAX_UNSUBSCRIBE_URL,  # one plain List-Unsubscribe header line
        description="Bulk mail: an https URL; adds List-Unsubscribe and one-click POST.",
    )
    scheduled_at: datetime | None = Field(default=None, description="Send at (ISO 8601, ≤30 days).")


class EmailEvent(BaseModel):
    """One step of a message's life."""

    type: str
    at: float


class EmailError(BaseModel):
    """Why a message failed (or was cancelled)."""

    code: str
    message: str | None


class Suppressed(BaseModel):
    """A recipient that was not sent to, and why."""

    address: str
    reason: str


class EmailBounce(BaseModel):
    """A delivery status notification about one recipient of the message: ``hard`` (the
    address cannot work; it is suppressed), ``soft`` (counted), ``policy`` (the receiver
    refused us), ``none`` (a delivery report)."""

    recipient: str
    kind: Literal["hard", "soft", "policy", "none"]
    status: str | None
    diagnostic: str | None
    at: float


class EmailView(BaseModel):
    """A message in the outbox (``bounces`` only when one message is read)."""

    model_config = ConfigDict(serialize_by_alias=True)

    id: str
    object: Literal["email"] = "email"
    status: Literal["queued", "sending", "sent", "failed", "cancelled"]
    from_: str = Field(serialization_alias="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    tags: list[str]
    message_id: str
    size: int
    scheduled_at: float | None
    created_at: float
    sent_at: float | None
    attempts: int
    relay_queue_id: str | None
    relay_reply: str | None
    error: EmailError | None
    suppressed: list[Suppressed]
    events: list[EmailEvent]
    bounces: list[EmailBounce] | None = None

    @classmethod
    def of(cls, r: MailRecord, bounces: list[dict[str, Any]] | None = None) -> EmailView:
        """From an outbox record."""
        view: dict[str, Any] = r.headers_view
        events = [EmailEvent(type="queued", at=r.created_at)]
        if r.scheduled_at is not None:
            events.append(EmailEvent(type="scheduled", at=r.scheduled_at))
        if r.handed_off_at is not None:
            events.append(EmailEvent(type="handed_off", at=r.handed_off_at))
        if r.finished_at is not None and r.state in (State.SENT, State.FAILED, State.CANCELLED):
            events.append(EmailEvent(type=r.state.value, at=r.finished_at))
        for b in bounces or []:
            events.append(EmailEvent(type="bounced", at=float(b["created_at"])))
        error = None
        if r.error_code is not None:
            error = EmailError(code=r.error_code or "", message=r.error_message)
        return cls(
            id=r.id,
            status=r.state.value,
            from_=r.from_address,
            to=view.get("to", []),
            cc=view.get("cc", []),
            bcc=view.get("bcc", []),
            subject=r.subject,
            tags=view.get("tags", []),
            message_id=r.message_id,
            size=r.size,
            scheduled_at=r.scheduled_at,
            created_at=r.created_at,
            sent_at=r.finished_at if r.state is State.SENT else None,
            attempts=r.attempts,
            relay_queue_id=r.relay_queue_id,
            relay_reply=r.relay_reply,
            error=error,
            suppressed=[Suppressed(**s) for s in r.suppressed or []],
            events=events,
            bounces=None
            if bounces is None
            else [
                EmailBounce(
                    recipient=b["recipient"],
                    kind=b["kind"],
                    status=b["status"],
                    diagnostic=b["diagnostic"],
                    at=float(b["created_at"]),
                )
                for b in bounces
            ],
        )


class EmailList(BaseModel):
    """A page of the caller's messages, newest first."""

    data: list[EmailView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


def _list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _scheduled(value: datetime | None, now: float) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    at = value.timestamp()
    if at > now + MAX_SCHEDULE_SECONDS:
        raise InvalidRequest(
            "parameter_invalid", "scheduled_at is more than 30 days ahead.", param="scheduled_at"
        )
    return max(at, now)


async def send(request: Request, ctx: KeyedContext) -> Response:
    """Queue a message: built, DKIM-signed and stored now, handed to the relay by the worker."""
    body = await read_json(request, SendEmail)
    draft = Draft(
        from_=body.from_,
        to=_list(body.to),
        cc=_list(body.cc),
        bcc=_list(body.bcc),
        reply_to=_list(body.reply_to),
        subject=body.subject,
        text=body.text,
        html=body.html,
        attachments=[Attachment(a.filename, a.content, a.content_type) for a in body.attachments],
        headers=body.headers,
        tags=body.tags,
        list_unsubscribe=body.list_unsubscribe_url,
    )
    mail = ctx.services.sending
    try:
        record = await mail.submit(ctx.user_id, draft, _scheduled(body.scheduled_at, time.time()))
    except MessageError as exc:
        raise InvalidRequest(
            "parameter_invalid", exc.message[:300] + ".", param=exc.field
        ) from None
    except SenderNotAllowed as exc:
        raise Unprocessable(exc.code, exc.message, param="from") from None
    except CapReached as exc:
        raise RateLimited(
            "daily_cap_reached", f"The {exc.which} daily cap ({exc.cap}) is reached."
        ) from None
    await _thread(ctx, record, body.headers or {})
    return json_response(EmailView.of(record, []), status_code=202)


async def _thread(ctx: KeyedContext, record: MailRecord, headers: dict[str, str]) -> None:
    """File the message in its conversation (by its Message-ID and the ones it answers), so
    replies to it land in the same thread."""
    by_name = {name.lower(): value for name, value in headers.items()}
    await ctx.services.inbound.store.link_outbound(
        ctx.user_id,
        sent_message_id=record.id,
        message_id=record.message_id.strip("<>"),
        in_reply_to=parse_message_ids(by_name.get("in-reply-to")),
        references=parse_message_ids(by_name.get("references")),
        subject=record.subject,
    )


async def list_emails(request: Request, ctx: KeyedContext) -> Response:
    """The caller's messages, newest first; ``status`` and ``tag`` filters."""
    page = page_request(request.query_params)
    status = request.query_params.get("status")
    if status is not None and status not in {s.value for s in State}:
        raise InvalidRequest("parameter_invalid", "Unknown status.", param="status")
    tag = request.query_params.get("tag")
    if tag is not None and not _TAG.fullmatch(tag):
        raise InvalidRequest("parameter_invalid", "Tags are 1-64 of A-Z a-z 0-9 _ -.", param="tag")
    records = await ctx.services.sending.outbox.list_emails(
        ctx.user_id,
        limit=page.limit + 1,
        offset=page.offset,
        before=page.after,
        state=State(status) if status else None,
        tag=tag,
    )
    return list_response(records, page, EmailView.of, lambda r: r.id)


async def get_email(request: Request, ctx: KeyedContext) -> Response:
    """One message: status, events, the relay's queue id, why it failed or was suppressed."""
    email_id = path_id(request, "email_id", "email", "email")
    record = await ctx.services.sending.outbox.get(ctx.user_id, email_id)
    if record is None:
        raise NotFound("email_not_found", f"No email {email_id!r}.")
    bounces = await ctx.services.inbound.store.bounces_of(record.id, ctx.user_id, limit=100)
    return json_response(EmailView.of(record, bounces))


async def cancel(request: Request, ctx: KeyedContext) -> Response:
    """Cancel a queued (or scheduled) message; 409 once it was handed to the relay."""
    email_id = path_id(request, "email_id", "email", "email")
    outbox = ctx.services.sending.outbox
    record = await outbox.cancel(ctx.user_id, email_id, time.time())
    if record is not None:
        return json_response(EmailView.of(record))
    current = await outbox.get(ctx.user_id, email_id)
    if current is None:
        raise NotFound("email_not_found", f"No email {email_id!r}.")
    raise Conflict(
        "email_not_cancellable", f"The email is {current.state.value}; only queued ones cancel."
    )


class LinkView(BaseModel):
    """A tracked link and its clicks: people, and machines (scanners) kept apart."""

    index: int
    url: str
    clicks: int
    machine_clicks: int


class LinkList(BaseModel):
    """An email's tracked links, in the order they appear (empty without tracking)."""

    data: list[LinkView]
    opens: int = Field(description="Opens by people (webmail image proxies count as people).")
    machine_opens: int = Field(description="Prefetches: Apple Mail Privacy Protection, scanners.")


class ClickView(BaseModel):
    """One click: the link, who made it (``person``, ``scanner``...), when."""

    id: str
    index: int | None
    url: str | None
    actor: str
    user_agent: str | None
    at: float


class ClickList(BaseModel):
    """An email's clicks, oldest first (``offset``/``limit``)."""

    data: list[ClickView]
    has_more: bool
    limit: int
    offset: int


def _tracking(ctx: KeyedContext) -> TrackingStore:
    return TrackingStore(ctx.services.db.engine)


async def links(request: Request, ctx: KeyedContext) -> Response:
    """The email's tracked links with click counts, and its opens."""
    email_id = path_id(request, "email_id", "email", "email")
    store = _tracking(ctx)
    found = await store.links(ctx.user_id, email_id)
    if found is None:
        raise NotFound("email_not_found", f"No email {email_id!r}.")
    people, machines = await store.opens(email_id)
    data = [LinkView(**item.__dict__) for item in found]
    return json_response(LinkList(data=data, opens=people, machine_opens=machines))


async def clicks(request: Request, ctx: KeyedContext) -> Response:
    """The email's clicks, oldest first."""
    email_id = path_id(request, "email_id", "email", "email")
    page = page_request(request.query_params)
    found = await _tracking(ctx).clicks(
        ctx.user_id, email_id, limit=page.limit + 1, offset=page.offset
    )
    if found is None:
        raise NotFound("email_not_found", f"No email {email_id!r}.")
    data = [ClickView(**item.__dict__) for item in found[: page.limit]]
    return json_response(
        ClickList(data=data, has_more=len(found) > page.limit, limit=page.limit, offset=page.offset)
    )
