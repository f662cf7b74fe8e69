"""The inbound parser: decoded headers, bodies, attachments, references; bounds; and hostile
bytes never raising anything but InboundParseError (hypothesis)."""

from __future__ import annotations

import contextlib
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.mail.inbound_parse import (
    HeaderLimitExceeded,
    InboundParseError,
    MessageTooLarge,
    ParseLimits,
    StructureLimitExceeded,
    decode_header_value,
    parse_message,
    parse_message_ids,
    sanitise_filename,
)


def _message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?J=C3=B6rg=2C_Sales?= <Joerg@Example.COM>"
    msg["To"] = 'ann@acme.test, "Doe, Jane" <Jane@Acme.test>'
    msg["Cc"] = "bob@acme.test"
    msg["Subject"] = "=?iso-8859-1?q?R=E9union_?= =?utf-8?b?w6AgMTBo?="
    msg["Message-ID"] = "<m3@acme.test>"
    msg["In-Reply-To"] = "<m2@sender.test>"
    msg["References"] = "<m1@sender.test> <m2@sender.test>"
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    msg.set_content("Grüße\n")
    msg.add_alternative("<p>Grüße</p>", subtype="html")
    msg.add_attachment(
        b"%PDF-1.4 x", maintype="application", subtype="pdf", filename="../../etc/pass wd;.pdf"
    )
    return msg.as_bytes()


def test_a_multipart_message_is_decoded() -> None:
    parsed = parse_message(_message())
    assert parsed.subject == "Réunion à 10h"
    assert parsed.from_address == "joerg@example.com"
    assert parsed.from_name == "Jörg, Sales"
    assert parsed.to == ("ann@acme.test", "jane@acme.test")
    assert parsed.cc == ("bob@acme.test",)
    assert parsed.message_id == "m3@acme.test"
    assert parsed.in_reply_to == ("m2@sender.test",)
    assert parsed.references == ("m1@sender.test", "m2@sender.test")
    assert parsed.date == 1796637600.0
    assert parsed.text == "Grüße\n"
    assert parsed.html is not None
    assert "<p>Grüße</p>" in parsed.html
    (attachment,) = parsed.attachments
    assert attachment.filename == "pass wd_.pdf"
    assert attachment.content_type == "application/pdf"
    assert attachment.size == len(b"%PDF-1.4 x")
    assert attachment.data == b"%PDF-1.4 x"
    assert parsed.header("message-id") == "<m3@acme.test>"
    assert not parsed.is_report


def test_legacy_charsets_and_8bit_bodies() -> None:
    raw = (
        b"From: a@b.test\r\nSubject: =?koi8-r?b?8NLJ18XU?=\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=windows-1252\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    ) + "caf\xe9 \x80\r\n".encode("latin-1")
    parsed = parse_message(raw)
    assert parsed.subject == "Привет"
    assert parsed.text == "café €\n"


def test_malformed_headers_and_unknown_charsets_degrade_gracefully() -> None:
    raw = (
        b'From: <<<@@@>>>, "unterminated\r\nTo: ,,,\r\nSubject: =?x-unknown?q?abc?= =?utf-8?q?broken\r\n'
        b"Date: not a date\r\nMessage-ID: no brackets here\r\nIn-Reply-To: garbage\r\n"
        b"Content-Type: text/plain; charset=x-nonexistent\r\n\r\n\xff\xfe body\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.date is None
    assert parsed.message_id is None
    assert parsed.in_reply_to == ()
    assert parsed.text is not None
    assert "body" in parsed.text
    assert "abc" in parsed.subject or "x-unknown" in parsed.subject


def test_bad_base64_attachment_and_message_rfc822_attachment() -> None:
    inner = b"From: x@y.test\r\nSubject: inner\r\n\r\nhello\r\n"
    raw = (
        b"From: a@b.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b'--B\r\nContent-Type: image/png; name="x.png"\r\nContent-Transfer-Encoding: base64\r\n'
        b"Content-ID: <img1@x>\r\nContent-Disposition: inline\r\n\r\n!!!not base64==\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--B--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.text == "body"
    png, forwarded = parsed.attachments
    assert (png.filename, png.content_type, png.content_id, png.inline) == (
        "x.png",
        "image/png",
        "img1@x",
        True,
    )
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "attachment-1"
    assert b"Subject: inner" in forwarded.data


def test_limits_are_typed_errors() -> None:
    with pytest.raises(MessageTooLarge):
        parse_message(b"x" * 101, ParseLimits(max_bytes=100))
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\nbody"
    with pytest.raises(HeaderLimitExceeded):
        parse_message(many, ParseLimits(max_headers=20))
    with pytest.raises(HeaderLimitExceeded):
        parse_message(
            b"Subject: " + b"a" * 500 + b"\r\n\r\nbody", ParseLimits(max_header_length=100)
        )
    nested = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for depth in range(1, 8):
        nested += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (
            depth - 1,
            depth,
        )
    with pytest.raises(StructureLimitExceeded):
        parse_message(nested, ParseLimits(max_depth=4))
    parts = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + b"--B\r\n\r\nx\r\n" * 30
    with pytest.raises(StructureLimitExceeded):
        parse_message(parts + b"--B--\r\n", ParseLimits(max_parts=10))
    with pytest.raises(InboundParseError):
        parse_message("text, not bytes")  # type: ignore[arg-type]


def test_message_id_lists() -> None:
    assert parse_message_ids("<a@x> <b@x>\r\n <a@x> junk <c@x>") == ("a@x", "b@x", "c@x")
    assert parse_message_ids("bare@id.test") == ("bare@id.test",)
    assert parse_message_ids("no id") == ()
    assert parse_message_ids(None) == ()
    assert parse_message_ids(" ".join(f"<{i}@x>" for i in range(10)), 3) == ("7@x", "8@x", "9@x")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/etc/passwd", "passwd"),
        ("...", "attachment-3"),
        ("a\x00b\r\nc.txt", "a_b_c.txt"),
        ("$(rm -rf).sh", "(rm -rf).sh"),
        (None, "attachment-3"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_filenames_are_sanitised(name: str | None, expected: str) -> None:
    assert sanitise_filename(name, 3) == expected


def test_header_decoding_strips_controls() -> None:
    assert decode_header_value("a\r\n\tb\x07c") == "a b c"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise_untyped(raw: bytes) -> None:
    with contextlib.suppress(InboundParseError):
        parse_message(raw, ParseLimits(max_bytes=3000))


def _storable(value: object) -> bool:
    """No NUL and no lone surrogate anywhere (PostgreSQL text and JSON take the rest)."""
    if isinstance(value, str):
        return "\x00" not in value and value.encode("utf-8", "strict") is not None
    if isinstance(value, (tuple, list)):
        return all(_storable(v) for v in value)
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=1500).map(lambda b: b"From: a\x00\xff@b.test\r\nTo: x@y\r\n" + b))
def test_parsed_fields_are_always_storable(raw: bytes) -> None:
    try:
        parsed = parse_message(raw)
    except InboundParseError:
        return
    for name in (
        "message_id",
        "in_reply_to",
        "references",
        "subject",
        "from_address",
        "from_name",
        "to",
        "cc",
        "reply_to",
        "text",
        "html",
        "headers",
    ):
        assert _storable(getattr(parsed, name)), name
    assert all(_storable(a.filename) and _storable(a.content_type) for a in parsed.attachments)


_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=B",
        b"Content-Type: message/rfc822",
        b"Content-Type: text/plain; charset=utf-7",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Disposition: attachment; filename*=utf-8''%FF%FE",
        b"Subject: =?utf-8?b?////?=",
        b'From: "a" <b@c>, <<>>',
        b"References: <a@b> <",
        b"--B",
        b"--B--",
        b"",
        b"=C3=A9=\r",
        b"\xff\xfe\x00",
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_LINES, max_size=60))
def test_mime_shaped_garbage_never_raises_untyped(lines: list[bytes]) -> None:
    with contextlib.suppress(InboundParseError):
        parse_message(b"\r\n".join(lines))
