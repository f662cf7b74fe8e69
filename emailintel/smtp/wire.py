"""The SMTP client wire without I/O: a reply buffer for the server's bytes, a command encoder.

Pure (no sockets, no clock), like h11 for HTTP: the session feeds whatever bytes arrived and gets
complete replies back in order, so pipelined replies (RFC 2920) and replies nobody asked for
(Postfix's parting ``421``) come out the same way. Hostile input ends in :class:`SmtpWireError`
(bytes that are no reply, or beyond the limits) or :class:`InjectionError` (a command argument
that could smuggle a command), never in anything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from emailintel.errors import AddressError, InjectionError, SmtpWireError

__all__ = [
    "MAX_BUFFER",
    "MAX_LINE",
    "MAX_LINES",
    "Reply",
    "ReplyBuffer",
    "ehlo",
    "encode_path",
    "format_reply",
    "helo",
    "mail_from",
    "noop",
    "parse_enhanced_code",
    "parse_extensions",
    "pipeline",
    "quit",
    "rcpt_to",
    "rset",
    "starttls",
]

MAX_LINE: Final = 4096
"""Bytes per reply line with its CRLF (RFC 5321 allows 512; some servers send more, never this)."""

MAX_LINES: Final = 128
"""Lines per reply (a rich EHLO reply has about 20)."""

MAX_BUFFER: Final = 65_536
"""Bytes of an unfinished reply held while waiting for its last line."""

MAX_PATH: Final = 320
"""Bytes of a MAIL/RCPT path (RFC 5321: 64 local part + @ + 255 domain)."""

_CODE = re.compile(rb"[2-5][0-9]{2}")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_PARAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*(?:=[\x21-\x3c\x3e-\x7e]+)?")
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f<>\u2028\u2029]")
_TOKEN = re.compile(r"[\x21-\x7e]+")

# RFC 3463 enhanced status code at the start of a line (after an optional reply code) or as #x.y.z
_ENHANCED_LINE = re.compile(r"^\s*(?:\d{3}[ -])?#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])", re.M)
_ENHANCED_HASH = re.compile(r"#([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def parse_enhanced_code(message: str) -> str | None:
    """The RFC 3463 enhanced status code a reply text starts a line with (or ``#x.y.z``), if any."""
    match = _ENHANCED_LINE.search(message) or _ENHANCED_HASH.search(message)
    if match is None:
        return None
    return ".".join(match.groups())


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply: its code, the text of each line, its enhanced status code."""

    code: int
    lines: tuple[str, ...]
    enhanced_code: str | None

    @property
    def message(self) -> str:
        """The lines' text joined by newlines (what a multi-line reply says, without codes)."""
        return "\n".join(self.lines)


class ReplyBuffer:
    """Turns the server's bytes, split anyhow, into complete replies, in the order sent.

    ``feed(data)`` returns the replies ``data`` completed (often none, several when pipelined).
    Lines end in CRLF or a bare LF. After a :class:`SmtpWireError` the stream is out of step and
    every later ``feed`` raises again.
    """

    def __init__(
        self, *, max_line: int = MAX_LINE, max_lines: int = MAX_LINES, max_buffer: int = MAX_BUFFER
    ) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        self.max_buffer = max_buffer
        self._data = bytearray()  # bytes not yet cut into lines
        self._lines: list[str] = []  # text of the unfinished reply's lines
        self._code: bytes | None = None  # code of the unfinished reply
        self._held = 0  # bytes of those lines
        self._broken: str | None = None

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete reply."""
        return len(self._data) + self._held

    def feed(self, data: bytes) -> list[Reply]:
        """Take the bytes that arrived; return the replies they complete, in order."""
        if self._broken is not None:
            raise SmtpWireError(f"reply stream out of step after: {self._broken}")
        try:
            return self._feed(data)
        except SmtpWireError as exc:
            self._broken = str(exc)
            self._data, self._lines, self._code, self._held = bytearray(), [], None, 0
            raise

    def _feed(self, data: bytes) -> list[Reply]:
        self._data += data
        replies: list[Reply] = []
        start = 0
        while (end := self._data.find(b"\n", start)) != -1:
            if end + 1 - start > self.max_line:
                raise SmtpWireError(f"reply line longer than {self.max_line} bytes")
            reply = self._line(bytes(self._data[start:end]), end + 1 - start)
            start = end + 1
            if reply is not None:
                replies.append(reply)
        del self._data[:start]
        if len(self._data) >= self.max_line:  # not even the line end fits any more
            raise SmtpWireError(f"reply line longer than {self.max_line} bytes")
        if self.pending > self.max_buffer:
            raise SmtpWireError(f"unfinished reply longer than {self.max_buffer} bytes")
        return replies

    def _line(self, raw: bytes, size: int) -> Reply | None:
        """One line without its LF (``size`` bytes with it); the reply it completes, if any."""
        raw = raw.rstrip(b"\r")
        code, sep = raw[:3], raw[3:4]
        if not _CODE.fullmatch(code) or sep not in (b"", b" ", b"-"):
            raise SmtpWireError(f"not an SMTP reply line: {raw[:80]!r}")
        if self._code is not None and code != self._code:
            raise SmtpWireError(f"reply code changed within a reply: {raw[:80]!r}")
        self._lines.append(raw[4:].decode("utf-8", errors="replace").strip(" \t"))
        if len(self._lines) > self.max_lines:
            raise SmtpWireError(f"reply of more than {self.max_lines} lines")
        if sep == b"-":
            self._code = code
            self._held += size
            return None
        lines = tuple(self._lines)
        self._lines, self._code, self._held = [], None, 0
        message = "\n".join(lines)
        return Reply(int(code), lines, parse_enhanced_code(message))


def format_reply(code: int, lines: Sequence[str]) -> bytes:
    """The bytes a server sends for ``code`` with these lines (the inverse of the buffer)."""
    if isinstance(code, bool) or not isinstance(code, int) or not 200 <= code <= 599:
        raise SmtpWireError(f"reply code out of range 200-599: {code!r}")
    texts = list(lines) or [""]
    for text in texts:
        if "\r" in text or "\n" in text or "\x00" in text:
            raise InjectionError("reply text contains CR, LF or NUL")
    last = len(texts) - 1
    return b"".join(
        b"%d%s%s\r\n" % (code, b" " if i == last else b"-", text.encode("utf-8"))
        for i, text in enumerate(texts)
    )


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (lower case) and their parameters; the first line is the greeting."""
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.partition(" ")
        if _KEYWORD.fullmatch(keyword):
            extensions[keyword.lower()] = params.strip()
    return extensions


# --- commands -------------------------------------------------------------------------------------


def encode_path(address: str, what: str = "recipient", *, allow_empty: bool = False) -> bytes:
    """The UTF-8 bytes of a MAIL/RCPT path; a typed AddressError for anything unsafe to send.

    InjectionError for line breaks, controls, angle brackets (even quoted: a naive server would
    end the path there), overlong and (unless ``allow_empty``: the null sender) empty paths;
    ``syntax_invalid`` for text with lone surrogates.
    """
    if not address and not allow_empty:
        raise InjectionError(f"{what} is empty")
    if _UNSAFE_PATH.search(address):
        raise InjectionError(f"{what} contains characters that could inject SMTP commands")
    try:
        data = address.encode("utf-8")
    except UnicodeEncodeError:
        raise AddressError(
            f"{what} is not valid Unicode text (lone surrogate)", code="syntax_invalid"
        ) from None
    if len(data) > MAX_PATH:
        raise InjectionError(f"{what} is too long for an SMTP command")
    return data


def _token(value: str, what: str) -> bytes:
    """One command argument: printable ASCII without spaces, at most 255 characters."""
    if not _TOKEN.fullmatch(value):
        raise InjectionError(f"{what} must be printable ASCII without spaces, got {value!r}")
    if len(value) > 255:
        raise InjectionError(f"{what} is too long for an SMTP command")
    return value.encode("ascii")


def _params(params: Sequence[str]) -> bytes:
    for param in params:
        if not _PARAM.fullmatch(param):
            raise InjectionError(f"not an ESMTP parameter: {param!r}")
    return b"".join(b" " + param.encode("ascii") for param in params)


def ehlo(name: str) -> bytes:
    """``EHLO name``: ``name`` is our host name or address literal."""
    return b"EHLO " + _token(name, "EHLO name") + b"\r\n"


def helo(name: str) -> bytes:
    """``HELO name``, for servers that refuse EHLO."""
    return b"HELO " + _token(name, "HELO name") + b"\r\n"


def starttls() -> bytes:
    """``STARTTLS`` (RFC 3207)."""
    return b"STARTTLS\r\n"


def mail_from(sender: str, params: Sequence[str] = ()) -> bytes:
    """``MAIL FROM:<sender>`` with ESMTP parameters (``SMTPUTF8``); empty: the null sender."""
    path = encode_path(sender, "sender", allow_empty=True)
    return b"MAIL FROM:<" + path + b">" + _params(params) + b"\r\n"


def rcpt_to(recipient: str, params: Sequence[str] = ()) -> bytes:
    """``RCPT TO:<recipient>`` with ESMTP parameters."""
    return b"RCPT TO:<" + encode_path(recipient) + b">" + _params(params) + b"\r\n"


def rset() -> bytes:
    """``RSET``: abort the transaction, keep the connection."""
    return b"RSET\r\n"


def noop() -> bytes:
    """``NOOP``."""
    return b"NOOP\r\n"


def quit() -> bytes:
    """``QUIT``."""
    return b"QUIT\r\n"


def pipeline(*commands: bytes) -> bytes:
    """Several encoded commands as one write (RFC 2920); their replies come back in order."""
    for command in commands:
        if not command.endswith(b"\r\n") or b"\n" in command[:-1] or b"\r" in command[:-2]:
            raise InjectionError(f"not one encoded command line: {command[:80]!r}")
    return b"".join(commands)
