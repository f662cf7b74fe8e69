"""Parse a received message (pure): decoded headers, text and HTML bodies, attachments, and the
Message-ID references that thread it. Everything is bounded; hostile input raises only
:class:`InboundParseError` (or a subclass), never anything else.

Header values are decoded from the raw stored text (RFC 2047, any charset, undecodable bytes
replaced) instead of through ``email``'s structured header classes (``policy.default``), which
raise on odd input and cost a header parse per access.
"""

from __future__ import annotations

import email.header
import email.utils
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser

__all__ = [
    "Attachment",
    "HeaderLimitExceeded",
    "InboundParseError",
    "MessageTooLarge",
    "ParseLimits",
    "ParsedMessage",
    "StructureLimitExceeded",
    "decode_header_value",
    "header_values",
    "parse_addresses",
    "parse_message",
    "parse_message_ids",
    "sanitise_filename",
]


class InboundParseError(ValueError):
    """The message cannot be accepted as mail; ``code`` is stable, the text is ours."""

    code = "malformed_message"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class MessageTooLarge(InboundParseError):
    """Over :attr:`ParseLimits.max_bytes`."""

    code = "message_too_large"


class HeaderLimitExceeded(InboundParseError):
    """Too many header fields, or one too long."""

    code = "header_limit"


class StructureLimitExceeded(InboundParseError):
    """MIME nesting too deep or too many parts."""

    code = "structure_limit"


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on what one message may be: size, MIME depth and parts, header fields."""

    max_bytes: int = 25 * 1024 * 1024
    max_depth: int = 12
    max_parts: int = 250
    max_headers: int = 400  # per part
    max_header_length: int = 32 * 1024  # one field, unfolded
    max_references: int = 100  # the newest are kept
    max_filename: int = 200


@dataclass(frozen=True)
class Attachment:
    """An attached part: its index (stable: document order), safe filename, type and bytes."""

    index: int
    filename: str
    content_type: str
    size: int
    content_id: str | None
    inline: bool
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ParsedMessage:
    """What we keep of a message, decoded. Addresses are lower-cased ``local@domain``."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_address: str | None
    from_name: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    date: float | None
    headers: tuple[tuple[str, str], ...]
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    size: int
    is_report: bool
    """A ``multipart/report`` (DSN or feedback report): see :mod:`server.mail.dsn`."""

    def header(self, name: str) -> str | None:
        """The first value of a header field (case-insensitive)."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


# compat32: headers stay raw text (we decode them ourselves); policy.default would build a
# structured header object on every access, several times slower, for nothing we use.
_PARSER = BytesParser(policy=policy.compat32)
_MSGID = re.compile(r"<([!-;=?-~]{1,250})>")  # printable ASCII without < >
_BARE_MSGID = re.compile(r"^[!-;=?-~]{1,200}@[!-;=?-~]{1,200}$")
_ADDRESS = re.compile(
    r"^[^\x00-\x20\x7f<>\ud800-\udfff]{1,64}@[^\x00-\x20\x7f<>@\ud800-\udfff]{1,255}$"
)
_UNSAFE_NAME = re.compile(r"[^\w.\- ()\[\]+,=@]+", re.UNICODE)


def decode_header_value(raw: str, max_length: int = 32 * 1024) -> str:
    """A header's raw text decoded: unfolded, RFC 2047 words joined, bad bytes replaced."""
    text = raw[: max_length * 2]
    unfolded = re.sub(r"\r?\n[ \t]+", " ", text).strip()
    try:
        decoded = str(email.header.make_header(email.header.decode_header(unfolded)))
    except Exception:  # malformed encoded words, unknown charsets: keep the text as it came
        decoded = unfolded
    cleaned = decoded.encode("utf-8", "replace").decode("utf-8")
    return "".join(ch if ch >= " " or ch == "\t" else " " for ch in cleaned)[:max_length]


def parse_message_ids(value: str | None, limit: int = 100) -> tuple[str, ...]:
    """The Message-IDs in an ``In-Reply-To``/``References``/``Message-ID`` value, without angle
    brackets, in order, deduplicated, at most the last ``limit``. A bare ``a@b`` counts too."""
    if not value:
        return ()
    found = _MSGID.findall(value)
    if not found and _BARE_MSGID.match(value.strip()):
        found = [value.strip()]
    seen: dict[str, None] = {}
    for item in found:
        seen.setdefault(item, None)
    ids = list(seen)
    return tuple(ids[-limit:]) if limit else ()


def parse_addresses(values: Iterable[str]) -> list[tuple[str, str]]:
    """``(display name, lower-cased address)`` pairs; entries without an ``@`` are dropped."""
    try:
        pairs = email.utils.getaddresses(list(values))
    except Exception:
        return []
    out: list[tuple[str, str]] = []
    for name, address in pairs:
        address = address.strip()
        if _ADDRESS.match(address):  # no controls, spaces or undecodable bytes (safe to store)
            out.append((name.strip(), address.lower()))
    return out


def sanitise_filename(name: str | None, index: int, max_length: int = 200) -> str:
    """A filename safe to put in a Content-Disposition and on any file system: no directory
    parts, control or shell-special characters, leading dots; ``attachment-<n>`` when empty."""
    if name:
        base = re.split(r"[\\/]", name)[-1]
        base = _UNSAFE_NAME.sub("_", base).strip(" ._")
        if len(base) > max_length:
            stem, dot, ext = base.rpartition(".")
            keep_ext = bool(dot) and 0 < len(ext) < 16
            base = stem[: max_length - len(ext) - 1] + "." + ext if keep_ext else base[:max_length]
        if base:
            return base[:max_length]
    return f"attachment-{index}"


def header_values(msg: Message, limits: ParseLimits) -> tuple[tuple[str, str], ...]:
    """A part's header fields decoded, in order; :class:`HeaderLimitExceeded` past the bounds."""
    items = msg.raw_items()
    out: list[tuple[str, str]] = []
    for count, (name, raw) in enumerate(items, start=1):
        if count > limits.max_headers:
            raise HeaderLimitExceeded(f"more than {limits.max_headers} header fields")
        raw_text = str(raw)
        if len(raw_text) > limits.max_header_length:
            raise HeaderLimitExceeded(f"a header field is over {limits.max_header_length} chars")
        out.append(
            (
                decode_header_value(str(name), 200),
                decode_header_value(raw_text, limits.max_header_length),
            )
        )
    return tuple(out)


def _first(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers if key.lower() == wanted), None)


def _all(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    wanted = name.lower()
    return [value for key, value in headers if key.lower() == wanted]


def _decode_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return payload.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):
        return (
            payload.decode("utf-8", "replace") if charset != "utf-8" else payload.decode("latin-1")
        )


def _payload_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    if isinstance(raw, list):  # message/rfc822 attached: its serialised form
        inner = raw[0] if raw else None
        try:
            return inner.as_bytes(policy=policy.SMTP) if isinstance(inner, Message) else b""
        except Exception:
            return b""
    return b""


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return decode_header_value(str(name)) if name else None


@dataclass
class _Walk:
    limits: ParseLimits
    parts: int = 0
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)

    def visit(self, part: Message, depth: int) -> None:
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise StructureLimitExceeded(f"more than {self.limits.max_parts} MIME parts")
        if depth > self.limits.max_depth:
            raise StructureLimitExceeded(f"MIME nesting deeper than {self.limits.max_depth}")
        if depth:
            header_values(part, self.limits)  # bounds every part's header block
        ctype = _content_type(part)
        if part.is_multipart() and ctype.startswith("multipart/"):
            payload = part.get_payload()
            for child in payload if isinstance(payload, list) else ():
                if isinstance(child, Message):
                    self.visit(child, depth + 1)
            return
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        body = ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename
        if body:
            (self.texts if ctype == "text/plain" else self.htmls).append(_decode_text(part))
            return
        if depth == 0 and ctype.startswith("text/"):
            self.texts.append(_decode_text(part))
            return
        data = _payload_bytes(part)
        index = len(self.attachments)
        cid = part.get("Content-ID")
        self.attachments.append(
            Attachment(
                index=index,
                filename=sanitise_filename(filename, index, self.limits.max_filename),
                content_type=ctype,
                size=len(data),
                content_id=(parse_message_ids(str(cid), 1) or (None,))[0] if cid else None,
                inline=disposition == "inline",
                data=data,
            )
        )


def _content_type(part: Message) -> str:
    try:
        ctype = part.get_content_type()
    except Exception:
        return "application/octet-stream"
    return (
        ctype
        if re.fullmatch(r"[\w.+-]{1,64}/[\w.+-]{1,128}", ctype, re.ASCII)
        else "application/octet-stream"
    )


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        return parsed.timestamp()
    except Exception:
        return None


def _lines(text: str) -> str:
    """Line ends as ``\n`` (mail arrives with CRLF); no NUL or undecodable characters (neither
    can be stored in a PostgreSQL text column)."""
    clean = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return clean.replace("\r\n", "\n")


def _raw_headers(msg: Message) -> list[tuple[str, str]]:
    items = msg.raw_items()
    return [(str(k), re.sub(r"\r?\n[ \t]+", " ", str(v))) for k, v in items]


def _addresses(raw: Sequence[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    """Addresses split before decoding (a comma inside an encoded name stays in the name)."""
    pairs = parse_addresses(_all(raw, name))
    return [(decode_header_value(n, 500), a) for n, a in pairs]


def parse_message(raw: bytes, limits: ParseLimits | None = None) -> ParsedMessage:
    """Parse ``raw`` (RFC 5322 bytes as received). Raises :class:`InboundParseError` only."""
    limits = limits or ParseLimits()
    if not isinstance(raw, (bytes, bytearray)):
        raise InboundParseError("a message is bytes")
    if len(raw) > limits.max_bytes:
        raise MessageTooLarge(f"message over {limits.max_bytes} bytes")
    try:
        return _parse(bytes(raw), limits)
    except InboundParseError:
        raise
    except RecursionError:
        raise StructureLimitExceeded("MIME structure too deep") from None
    except Exception as exc:  # the email package raises many types on hostile input
        raise InboundParseError(f"unparseable message ({type(exc).__name__})") from None


def _parse(raw: bytes, limits: ParseLimits) -> ParsedMessage:
    msg = _PARSER.parsebytes(raw)
    headers = header_values(msg, limits)
    walk = _Walk(limits)
    walk.visit(msg, 0)
    is_report = _content_type(msg) == "multipart/report"
    raw_headers = _raw_headers(msg)
    sender = _addresses(raw_headers, "From")[:1]
    return ParsedMessage(
        message_id=(parse_message_ids(_first(headers, "Message-ID"), 1) or (None,))[0],
        in_reply_to=parse_message_ids(_first(headers, "In-Reply-To"), limits.max_references),
        references=parse_message_ids(_first(headers, "References"), limits.max_references),
        subject=(_first(headers, "Subject") or "")[:2000],
        from_address=sender[0][1] if sender else None,
        from_name=(sender[0][0] or None) if sender else None,
        to=tuple(a for _, a in _addresses(raw_headers, "To"))[:500],
        cc=tuple(a for _, a in _addresses(raw_headers, "Cc"))[:500],
        reply_to=tuple(a for _, a in _addresses(raw_headers, "Reply-To"))[:50],
        date=_date(_first(headers, "Date")),
        headers=headers,
        text=_lines("\n".join(walk.texts)) if walk.texts else None,
        html=_lines("\n".join(walk.htmls)) if walk.htmls else None,
        attachments=tuple(walk.attachments),
        size=len(raw),
        is_report=is_report,
    )
