"""BaviMail inbound over HTTP: received emails (list, get, raw, attachment, delete) and the
conversations that thread them with sent mail. Another user's id is a 404 like an unknown one."""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from server.errors import ErrorEnvelope, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import page_request
from server.mail.inbound_parse import InboundParseError, ParseLimits, parse_message
from server.mail.inbound_store import InboundRow
from server.resources._common import json_response, list_response, path_id
from server.routes import Operation, QueryParam

__all__ = [
    "ConversationDetail",
    "ConversationList",
    "ConversationView",
    "InboundEmailList",
    "InboundEmailView",
    "operations",
]

_EMAIL = "inb"
_CONVERSATION = "cnv"
_MAX_ATTACHMENTS = 250


class AttachmentView(BaseModel):
    """An attachment of a received email (download it by ``index``)."""

    index: int
    filename: str
    content_type: str
    size: int
    content_id: str | None
    inline: bool


class Sender(BaseModel):
    """The From address and display name."""

    address: str | None
    name: str | None


class InboundEmailView(BaseModel):
    """A received email: envelope, decoded headers, bodies, attachments, thread."""

    id: str
    object: str = "inbound_email"
    kind: str
    conversation_id: str | None
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    mail_from: str
    rcpt_to: list[str]
    sender: Sender
    to: list[str]
    cc: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: list[list[str]] | None
    attachments: list[AttachmentView]
    auto_reply: str | None
    size: int
    date: float | None
    received_at: float

    @classmethod
    def of(cls, row: InboundRow, *, full: bool = True) -> InboundEmailView:
        """From a stored row (``full=False``: no headers, for lists)."""
        return cls(
            id=row.id,
            kind=row.kind,
            conversation_id=row.conversation_id,
            message_id=row.message_id,
            in_reply_to=row.in_reply_to,
            references=row.references,
            mail_from=row.mail_from,
            rcpt_to=row.rcpt_to,
            sender=Sender(address=row.from_address, name=row.from_name),
            to=row.to,
            cc=row.cc,
            subject=row.subject,
            text=row.text,
            html=row.html,
            headers=row.headers if full else None,
            attachments=[AttachmentView.model_validate(a) for a in row.attachments],
            auto_reply=row.auto_reply,
            size=row.size,
            date=row.sent_date,
            received_at=row.received_at,
        )


class InboundEmailList(BaseModel):
    """A page of received emails, newest first."""

    data: list[InboundEmailView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class Deleted(BaseModel):
    """What was deleted."""

    id: str
    object: str = "inbound_email"
    deleted: bool = True


class RawMessage(BaseModel):
    """The message as received (documented as a ``message/rfc822`` download)."""

    binary_media_type: ClassVar[str] = "message/rfc822"


class AttachmentBytes(BaseModel):
    """An attachment's bytes, in its own content type."""

    binary_media_type: ClassVar[str] = "*/*"


class ConversationView(BaseModel):
    """A thread of sent and received messages."""

    id: str
    object: str = "conversation"
    subject: str
    message_count: int
    inbound_count: int
    last_message_at: float
    created: float


class ConversationMessage(BaseModel):
    """One message of a thread: a received email (``inb_`` id) or one we sent."""

    direction: str
    id: str
    message_id: str
    at: float
    inbound: InboundEmailView | None = None


class ConversationDetail(ConversationView):
    """A conversation with its messages, oldest first."""

    messages: list[ConversationMessage]


class ConversationList(BaseModel):
    """A page of conversations, newest first."""

    data: list[ConversationView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


def _conversation_view(row: Any) -> ConversationView:
    return ConversationView(
        id=row.id,
        subject=row.subject,
        message_count=row.message_count,
        inbound_count=row.inbound_count,
        last_message_at=row.last_message_at,
        created=row.created_at,
    )


async def _email(request: Request, ctx: KeyedContext) -> InboundRow:
    email_id = path_id(request, "email_id", _EMAIL, "inbound_email")
    row = await ctx.services.inbound.store.get(ctx.user_id, email_id)
    if row is None:
        raise NotFound("inbound_email_not_found", f"No inbound email {email_id!r}.")
    return row


async def list_emails(request: Request, ctx: KeyedContext) -> Response:
    """The caller's received emails, newest first."""
    page = page_request(request.query_params)
    rows = await ctx.services.inbound.store.list_inbound(
        ctx.user_id, after=page.after, offset=page.offset, limit=page.limit
    )
    return list_response(rows, page, lambda r: InboundEmailView.of(r, full=False), lambda r: r.id)


async def get_email(request: Request, ctx: KeyedContext) -> Response:
    """One received email with its decoded headers."""
    return json_response(InboundEmailView.of(await _email(request, ctx)))


async def _raw(ctx: KeyedContext, row: InboundRow) -> bytes:
    data = await ctx.services.inbound.raw.get(row.raw_key)
    if data is None:
        raise NotFound("inbound_email_raw_missing", f"The raw message of {row.id!r} is gone.")
    return data


async def get_raw(request: Request, ctx: KeyedContext) -> Response:
    """The message exactly as received (``message/rfc822``)."""
    row = await _email(request, ctx)
    return Response(
        await _raw(ctx, row),
        media_type="message/rfc822",
        headers={
            "Content-Disposition": f'attachment; filename="{row.id}.eml"',
            "X-Content-Type-Options": "nosniff",
        },
    )


async def get_attachment(request: Request, ctx: KeyedContext) -> Response:
    """One attachment's bytes, always as a download (never rendered by the browser)."""
    row = await _email(request, ctx)
    raw_index = str(request.path_params.get("index", ""))
    index = int(raw_index) if raw_index.isascii() and raw_index.isdigit() else -1
    if not 0 <= index < min(len(row.attachments), _MAX_ATTACHMENTS):
        raise NotFound("attachment_not_found", f"No attachment {raw_index[:20]!r}.")
    try:
        parsed = parse_message(await _raw(ctx, row), ParseLimits(max_bytes=1 << 62))
    except InboundParseError:
        raise NotFound("attachment_not_found", f"No attachment {index}.") from None
    if index >= len(parsed.attachments):
        raise NotFound("attachment_not_found", f"No attachment {index}.")
    attachment = parsed.attachments[index]
    quoted = urllib.parse.quote(attachment.filename, safe="")
    return Response(
        attachment.data,
        media_type=attachment.content_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quoted}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


async def delete_email(request: Request, ctx: KeyedContext) -> Response:
    """Delete a received email and its raw message."""
    email_id = path_id(request, "email_id", _EMAIL, "inbound_email")
    inbound = ctx.services.inbound
    row = await inbound.store.delete(ctx.user_id, email_id)
    if row is None:
        raise NotFound("inbound_email_not_found", f"No inbound email {email_id!r}.")
    await inbound.raw.delete(row.raw_key)
    return json_response(Deleted(id=row.id))


async def list_conversations(request: Request, ctx: KeyedContext) -> Response:
    """The caller's conversations, newest first."""
    page = page_request(request.query_params)
    rows = await ctx.services.inbound.store.conversations(
        ctx.user_id, after=page.after, offset=page.offset, limit=page.limit
    )
    return list_response(rows, page, _conversation_view, lambda r: r.id)


async def get_conversation(request: Request, ctx: KeyedContext) -> Response:
    """A conversation and its messages, oldest first."""
    conversation_id = path_id(request, "conversation_id", _CONVERSATION, "conversation")
    found = await ctx.services.inbound.store.conversation(ctx.user_id, conversation_id)
    if found is None:
        raise NotFound("conversation_not_found", f"No conversation {conversation_id!r}.")
    conversation, messages, inbound = found
    by_id = {row.id: row for row in inbound}
    listed = [
        ConversationMessage(
            direction=m.source,
            id=m.ref_id,
            message_id=m.message_id,
            at=m.created_at,
            inbound=InboundEmailView.of(by_id[m.ref_id], full=False) if m.ref_id in by_id else None,
        )
        for m in messages
    ]
    seen = {m.ref_id for m in messages}
    listed += [  # received emails without a Message-ID of their own
        ConversationMessage(
            direction="inbound",
            id=row.id,
            message_id="",
            at=row.received_at,
            inbound=InboundEmailView.of(row, full=False),
        )
        for row in inbound
        if row.id not in seen
    ]
    listed.sort(key=lambda m: (m.at, m.id))
    view = _conversation_view(conversation)
    return json_response(ConversationDetail(**view.model_dump(), messages=listed))


V1 = "/api/v1"
_PAGING = (
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Rows per page (20)."),
    QueryParam("offset", {"type": "integer", "minimum": 0, "maximum": 100000}, "Rows to skip."),
    QueryParam("cursor", {"type": "string", "maxLength": 200}, "next_cursor of the last page."),
)
_EMAIL_ID = QueryParam(
    "email_id",
    {"type": "string", "pattern": r"^inb_[0-9A-HJKMNP-TV-Z]{26}$"},
    "An inbound email id.",
)
_CONVERSATION_ID = QueryParam(
    "conversation_id",
    {"type": "string", "pattern": r"^cnv_[0-9A-HJKMNP-TV-Z]{26}$"},
    "A conversation id.",
)
_INDEX = QueryParam(
    "index", {"type": "integer", "minimum": 0, "maximum": 249}, "The attachment's index."
)
_NOT_FOUND: dict[int, type[BaseModel]] = {404: ErrorEnvelope}


def operations() -> tuple[Operation, ...]:
    """The inbound-email and conversation routes (scope ``bavimail``)."""
    common: dict[str, Any] = {"tag": "bavimail", "access": "api_key", "scope": "bavimail"}
    base = f"{V1}/bavimail/inbound-emails"
    return (
        Operation(
            "GET",
            base,
            list_emails,
            "bavimail_inbound_list",
            "Received emails, newest first",
            InboundEmailList,
            query=_PAGING,
            **common,
        ),
        Operation(
            "GET",
            f"{base}/{{email_id}}",
            get_email,
            "bavimail_inbound_get",
            "A received email: headers, bodies, attachments",
            InboundEmailView,
            path_params=(_EMAIL_ID,),
            responses=_NOT_FOUND,
            **common,
        ),
        Operation(
            "GET",
            f"{base}/{{email_id}}/raw",
            get_raw,
            "bavimail_inbound_raw",
            "The received message as it arrived (message/rfc822)",
            RawMessage,
            path_params=(_EMAIL_ID,),
            responses=_NOT_FOUND,
            **common,
        ),
        Operation(
            "GET",
            f"{base}/{{email_id}}/attachments/{{index}}",
            get_attachment,
            "bavimail_inbound_attachment",
            "Download an attachment of a received email",
            AttachmentBytes,
            path_params=(_EMAIL_ID, _INDEX),
            responses=_NOT_FOUND,
            **common,
        ),
        Operation(
            "DELETE",
            f"{base}/{{email_id}}",
            delete_email,
            "bavimail_inbound_delete",
            "Delete a received email and its raw message",
            Deleted,
            path_params=(_EMAIL_ID,),
            responses=_NOT_FOUND,
            **common,
        ),
        Operation(
            "GET",
            f"{V1}/bavimail/conversations",
            list_conversations,
            "bavimail_conversations_list",
            "Conversations (sent and received mail threaded by Message-ID), newest first",
            ConversationList,
            query=_PAGING,
            **common,
        ),
        Operation(
            "GET",
            f"{V1}/bavimail/conversations/{{conversation_id}}",
            get_conversation,
            "bavimail_conversations_get",
            "A conversation with its messages",
            ConversationDetail,
            path_params=(_CONVERSATION_ID,),
            responses=_NOT_FOUND,
            **common,
        ),
    )
