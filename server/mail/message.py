"""Build one outgoing message from a validated request: the standard library's ``email``
(SMTP policy, 7-bit transfer encodings so no relay rewrites the body), then a DKIM signature.

Pure: no I/O. Every field that reaches a header is checked first, so no CR, LF or NUL from a
caller ever becomes a header line; non-ASCII text becomes RFC 2047 encoded words. Headers
receivers read literally (List-Unsubscribe, Message-ID, References, X-*) stay plain ASCII,
folded only at their own whitespace (:mod:`server.mail.header_fold`).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from server.mail import dkim_signing
from server.mail.header_fold import LINE_LIMIT, HeaderTooLong, VerbatimPolicy, fold_verbatim

__all__ = [
    "ALLOWED_HEADERS",
    "MAX_UNSUBSCRIBE_URL",
    "POLICY",
    "Attachment",
    "Draft",
    "Limits",
    "MessageError",
    "Sender",
    "build_message",
    "check_address",
    "dkim_sign",
    "message_id_for",
    "sanitise_filename",
]

# Extra headers a caller may set; everything structural (From, To, Date, Message-ID, MIME and
# Content-*, DKIM, Received, Return-Path, List-Unsubscribe*) is ours and refused.
ALLOWED_HEADERS = frozenset(
    {"in-reply-to", "references", "precedence", "auto-submitted", "list-id", "keywords"}
)
_X_HEADER = re.compile(r"X-[A-Za-z0-9][A-Za-z0-9-]{0,62}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")
# CR, LF, NUL, every other control character and the characters str.splitlines() breaks on.
_FORBIDDEN_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_URL = re.compile(r"https://[!-~]{1,2000}")

# Headers whose ASCII values receivers read literally: never encoded words (see header_fold).
_VERBATIM = frozenset({"message-id", "list-unsubscribe", "list-unsubscribe-post"} | ALLOWED_HEADERS)
# Message ids: ASCII only (RFC 5322 §3.6.4), an encoded word would break threading.
_ASCII_ONLY = frozenset({"in-reply-to", "references"})
_PRINTABLE_ASCII = re.compile(r"[\t\x20-\x7e]*")
_UNSUBSCRIBE_NAME = "List-Unsubscribe"
# The longest List-Unsubscribe URL whose ``Name: <url>`` line fits RFC 5322's 998 octets.
MAX_UNSUBSCRIBE_URL = LINE_LIMIT - len(f"{_UNSUBSCRIBE_NAME}: <>")


class _Policy(VerbatimPolicy):
    """The SMTP policy with ASCII List-Unsubscribe, Message-ID, caller and X- headers verbatim."""

    def picks(self, name: str, value: str) -> bool:
        """Verbatim for the literal-read headers when the value is printable ASCII."""
        literal = name.lower() in _VERBATIM or _X_HEADER.fullmatch(name) is not None
        return literal and _PRINTABLE_ASCII.fullmatch(value) is not None


# 7-bit transfer encodings (quoted-printable/base64 for anything else): a relay that converts
# 8BITMIME to 7BIT for a next hop would change the body and break the DKIM body hash.
POLICY = _Policy(linesep="\r\n", cte_type="7bit", max_line_length=78)

# Signed headers (RFC 6376 §5.4; RFC 8058 §4 wants both List-Unsubscribe headers covered).
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"reply-to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"in-reply-to",
    b"references",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


class MessageError(ValueError):
    """A request field that cannot become part of a message; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may carry (sizes in bytes, of the decoded content)."""

    recipients: int = 50
    subject: int = 998
    body: int = 512 * 1024
    attachments: int = 10
    attachment_bytes: int = 700 * 1024
    headers: int = 20
    header_value: int = 998
    tags: int = 10
    reply_to: int = 5
    display_name: int = 200


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment as the caller sent it (``content`` base64)."""

    filename: str
    content: str
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """What a caller asks to send (unchecked: :func:`build_message` checks every field)."""

    from_: str
    to: Sequence[str]
    subject: str
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: Sequence[str] = ()
    text: str | None = None
    html: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    list_unsubscribe: str | None = None  # https URL: makes the message bulk (RFC 8058 headers)


@dataclass(frozen=True, slots=True)
class Sender:
    """The sending identity's part of a message: the domain that signs, its key and defaults."""

    domain: str
    selector: str
    private_key_pem: bytes
    display_name: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class Built:
    """A signed message ready for the relay: bytes, envelope and what lists show."""

    raw: bytes
    message_id: str
    from_address: str
    envelope_from: str
    recipients: tuple[str, ...]  # To + Cc + Bcc, deduplicated, in order
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    tags: tuple[str, ...]


def _clean_line(value: str, field: str, limit: int) -> str:
    if _FORBIDDEN_CHARS.search(value):
        raise MessageError(field, "must not contain CR, LF, NUL or other control characters")
    if len(value) > limit:
        raise MessageError(field, f"is longer than {limit} characters")
    return value


def check_address(value: str, field: str) -> str:
    """An ASCII ``local@domain`` address (the domain in lower case); MessageError otherwise."""
    _clean_line(value, field, 320)
    local, sep, domain = value.strip().rpartition("@")
    if not sep or not _LOCAL.fullmatch(local) or local.startswith(".") or ".." in local:
        raise MessageError(field, f"{value!r} is not a valid ASCII address")
    if local.endswith(".") or not _DOMAIN.fullmatch(domain):
        raise MessageError(field, f"{value!r} is not a valid ASCII address")
    return f"{local}@{domain.lower()}"


def _mailbox(value: str, field: str) -> tuple[str, str]:
    """(display name, address) of ``Name <addr>`` or ``addr``."""
    _clean_line(value, field, 520)
    name, addr = parseaddr(value)
    if not addr:
        raise MessageError(field, f"{value!r} is not an address or 'Name <address>'")
    return name, check_address(addr, field)


def _addresses(values: Sequence[str], field: str) -> list[tuple[str, str]]:
    return [_mailbox(v, field) for v in values]


def sanitise_filename(name: str) -> str:
    """A safe attachment name: no path, no control characters, at most 200 characters."""
    base = re.split(r"[\\/]", name)[-1]
    cleaned = "".join(
        c for c in unicodedata.normalize("NFC", base) if unicodedata.category(c)[0] != "C"
    )
    cleaned = cleaned.strip().strip(".").replace('"', "'")
    return cleaned[:200] or "attachment"


def message_id_for(email_id: str, domain: str) -> str:
    """The message's Message-ID: fixed by its row id, so every retry sends the same one."""
    return f"<{email_id.lower()}@{domain}>"


def _check_headers(headers: Mapping[str, str], limits: Limits) -> list[tuple[str, str]]:
    if len(headers) > limits.headers:
        raise MessageError("headers", f"at most {limits.headers} extra headers")
    out = []
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise MessageError("headers", f"{name!r} is not a header name")
        if not (_X_HEADER.fullmatch(name) or name.lower() in ALLOWED_HEADERS):
            raise MessageError(
                "headers", f"{name!r} may not be set: only X-* and {sorted(ALLOWED_HEADERS)}"
            )
        where = f"headers.{name}"
        _clean_line(value, where, limits.header_value)
        if name.lower() in _ASCII_ONLY and not _PRINTABLE_ASCII.fullmatch(value):
            raise MessageError(where, "must be ASCII message ids")
        if POLICY.picks(name, value):
            _fits(name, value, where)
        out.append((name, value))
    return out


def _fits(name: str, value: str, field: str) -> None:
    """MessageError unless ``Name: value`` folds within RFC 5322's 998-octet lines."""
    try:
        fold_verbatim(name, value)
    except HeaderTooLong as exc:
        raise MessageError(
            field, f"has a word too long for one {LINE_LIMIT}-octet header line"
        ) from exc


def _decode(attachment: Attachment, index: int) -> bytes:
    try:
        return base64.b64decode(attachment.content, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(f"attachments[{index}].content", "is not valid base64") from None


def build_message(
    draft: Draft,
    sender: Sender,
    email_id: str,
    *,
    envelope_from: str | None = None,
    now: datetime | None = None,
    limits: Limits = Limits(),
) -> Built:
    """Check ``draft``, build its message and sign it with ``sender``'s DKIM key."""
    from_name, from_addr = _mailbox(draft.from_, "from")
    if from_addr.rpartition("@")[2] != sender.domain.lower():
        raise MessageError("from", f"must be an address on {sender.domain}")
    from_name = from_name or sender.display_name or ""
    _clean_line(from_name, "from", limits.display_name)
    to = _addresses(draft.to, "to")
    cc = _addresses(draft.cc, "cc")
    bcc = _addresses(draft.bcc, "bcc")
    if not to:
        raise MessageError("to", "at least one recipient")
    if len(to) + len(cc) + len(bcc) > limits.recipients:
        raise MessageError("to", f"at most {limits.recipients} recipients in to, cc and bcc")
    reply_to = _addresses(draft.reply_to, "reply_to")
    if not reply_to and sender.reply_to:
        reply_to = [_mailbox(sender.reply_to, "reply_to")]
    if len(reply_to) > limits.reply_to:
        raise MessageError("reply_to", f"at most {limits.reply_to} addresses")
    subject = _clean_line(draft.subject, "subject", limits.subject)
    if draft.text is None and draft.html is None:
        raise MessageError("text", "give text, html or both")
    for name, body in (("text", draft.text), ("html", draft.html)):
        if body is not None and (
            "\x00" in body or len(body.encode("utf-8", "replace")) > limits.body
        ):
            raise MessageError(name, f"must be at most {limits.body} bytes without NUL characters")
    extra = _check_headers(draft.headers, limits)
    if len(draft.tags) > limits.tags or any(not _TAG.fullmatch(t) for t in draft.tags):
        raise MessageError("tags", f"at most {limits.tags} tags of 1-64 of A-Z a-z 0-9 _ -")
    unsubscribe = draft.list_unsubscribe
    if unsubscribe is not None and (not _URL.fullmatch(unsubscribe) or ">" in unsubscribe):
        raise MessageError("list_unsubscribe", "must be an https URL without spaces or '>'")
    if unsubscribe is not None and len(unsubscribe) > MAX_UNSUBSCRIBE_URL:
        raise MessageError(
            "list_unsubscribe",
            f"must be at most {MAX_UNSUBSCRIBE_URL} characters (one header line)",
        )
    if len(draft.attachments) > limits.attachments:
        raise MessageError("attachments", f"at most {limits.attachments} attachments")
    payloads = [_decode(a, i) for i, a in enumerate(draft.attachments)]
    if sum(len(p) for p in payloads) > limits.attachment_bytes:
        raise MessageError("attachments", f"at most {limits.attachment_bytes} bytes in total")
    types = []
    for i, a in enumerate(draft.attachments):
        ctype = a.content_type or "application/octet-stream"
        if not _MIME.fullmatch(ctype):
            raise MessageError(f"attachments[{i}].content_type", "is not a type/subtype")
        types.append(ctype.lower().split("/", 1))

    message_id = message_id_for(email_id, sender.domain.lower())

    def assemble() -> bytes:
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(display_name=from_name, addr_spec=from_addr)
        msg["To"] = [Address(display_name=n, addr_spec=a) for n, a in to]
        if cc:
            msg["Cc"] = [Address(display_name=n, addr_spec=a) for n, a in cc]
        if reply_to:
            msg["Reply-To"] = [Address(display_name=n, addr_spec=a) for n, a in reply_to]
        msg["Subject"] = subject
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        msg["Message-ID"] = message_id
        msg["MIME-Version"] = "1.0"
        if unsubscribe is not None:
            msg[_UNSUBSCRIBE_NAME] = f"<{unsubscribe}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        for name, value in extra:
            msg[name] = value
        if draft.text is not None:
            msg.set_content(draft.text)
            if draft.html is not None:
                msg.add_alternative(draft.html, subtype="html")
        elif draft.html is not None:
            msg.set_content(draft.html, subtype="html")
        for a, payload, (maintype, subtype) in zip(draft.attachments, payloads, types, strict=True):
            msg.add_attachment(
                payload, maintype=maintype, subtype=subtype, filename=sanitise_filename(a.filename)
            )
        return msg.as_bytes(policy=POLICY)

    try:
        unsigned = assemble()
    except (ValueError, TypeError) as exc:  # a value the email package still refuses
        raise MessageError("message", f"cannot be built: {type(exc).__name__}") from None
    raw = dkim_sign(unsigned, sender)
    recipients = list(dict.fromkeys(a for _, a in [*to, *cc, *bcc]))
    return Built(
        raw=raw,
        message_id=message_id,
        from_address=from_addr,
        envelope_from=envelope_from or from_addr,
        recipients=tuple(recipients),
        to=tuple(a for _, a in to),
        cc=tuple(a for _, a in cc),
        bcc=tuple(a for _, a in bcc),
        subject=subject,
        tags=tuple(draft.tags),
    )


def dkim_sign(message: bytes, sender: Sender) -> bytes:
    """``message`` with a DKIM-Signature (rsa-sha256, relaxed/relaxed) over the
    :data:`SIGNED_HEADERS` it has prepended; DkimKeyError for an unusable key."""
    return dkim_signing.sign_message(
        message,
        domain=sender.domain,
        selector=sender.selector,
        private_key_pem=sender.private_key_pem,
        headers=SIGNED_HEADERS,
    )
