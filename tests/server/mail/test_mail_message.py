"""The message builder: structure, headers, encoded words, bounds, DKIM, and no header
injection from any user field."""

from __future__ import annotations

import base64
import email
from datetime import UTC, datetime
from email import policy

import dkim
import pytest
from draft_support import draft
from hypothesis import given, settings
from hypothesis import strategies as st
from mail_support import SELECTOR, dkim_dns, signing_key

from server.mail.message import (
    Attachment,
    Built,
    Limits,
    MessageError,
    Sender,
    build_message,
    message_id_for,
    sanitise_filename,
)

SENDER = Sender("acme.test", SELECTOR, signing_key()[0])
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def parse(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_a_plain_message_has_the_fixed_headers_and_verifies() -> None:
    built = build_message(draft(), SENDER, "email_01JABC", now=NOW)
    msg = parse(built.raw)
    assert msg["From"] == "Ann <ann@acme.test>"
    assert msg["To"] == "john.smith@company.test"
    assert msg["Message-ID"] == "<email_01jabc@acme.test>" == built.message_id
    assert msg["Date"] == "Mon, 07 Dec 2026 12:00:00 +0000"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().replace("\r\n", "\n") == "Hi John,\nhow are you?\n"
    assert "List-Unsubscribe" not in msg
    assert dkim.verify(built.raw, dnsfunc=dkim_dns)
    signature = msg["DKIM-Signature"]
    assert "a=rsa-sha256" in signature
    assert "c=relaxed/relaxed" in signature
    assert f"s={SELECTOR}" in signature
    assert "d=acme.test" in signature


def test_text_html_and_attachments_nest_alternative_in_mixed() -> None:
    pdf = base64.b64encode(b"%PDF-1.4 fake").decode()
    built = build_message(
        draft(html="<p>Hi</p>", attachments=[Attachment("q.pdf", pdf, "application/pdf")]),
        SENDER,
        "email_01JABD",
    )
    msg = parse(built.raw)
    assert msg.get_content_type() == "multipart/mixed"
    parts = [p.get_content_type() for p in msg.walk()]
    assert parts == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]
    attachment = next(msg.iter_attachments())
    assert attachment.get_filename() == "q.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"
    assert dkim.verify(built.raw, dnsfunc=dkim_dns)


def test_html_only_is_text_html() -> None:
    msg = parse(build_message(draft(text=None, html="<b>x</b>"), SENDER, "email_01J").raw)
    assert msg.get_content_type() == "text/html"


def test_bulk_mail_carries_one_click_unsubscribe_under_the_signature() -> None:
    built = build_message(
        draft(list_unsubscribe="https://acme.test/u/tok123"), SENDER, "email_01JABE"
    )
    msg = parse(built.raw)
    assert msg["List-Unsubscribe"] == "<https://acme.test/u/tok123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    signed = msg["DKIM-Signature"].replace(" ", "").replace("\r\n", "")
    assert "list-unsubscribe:list-unsubscribe-post" in signed
    assert dkim.verify(built.raw, dnsfunc=dkim_dns)
    tampered = built.raw.replace(b"u/tok123", b"u/tok999")
    assert not dkim.verify(tampered, dnsfunc=dkim_dns)


def test_non_ascii_becomes_encoded_words_and_seven_bit_bodies() -> None:
    built = build_message(
        draft(from_="Zoë Ünal <zoe@acme.test>", subject="Ça va? — 你好", text="Grüße\n"),
        SENDER,
        "email_01JABF",
    )
    assert all(b < 128 for b in built.raw)  # 7-bit on the wire: no relay rewrites the body
    assert b"=?utf-8?" in built.raw
    msg = parse(built.raw)
    assert msg["Subject"] == "Ça va? — 你好"
    assert msg["From"].addresses[0].display_name == "Zoë Ünal"
    assert msg.get_content().replace("\r\n", "\n") == "Grüße\n"
    assert dkim.verify(built.raw, dnsfunc=dkim_dns)


def test_extra_headers_tags_and_envelope() -> None:
    built = build_message(
        draft(
            to=["a@company.test", "b@company.test"],
            cc=["C <c@company.test>"],
            bcc=["d@company.test", "a@company.test"],
            headers={"X-Campaign": "q4", "In-Reply-To": "<x@y.test>"},
            tags=["q4", "intro"],
        ),
        SENDER,
        "email_01JABG",
    )
    msg = parse(built.raw)
    assert msg["X-Campaign"] == "q4"
    assert msg["In-Reply-To"] == "<x@y.test>"
    assert "Bcc" not in msg  # never on the wire
    assert built.recipients == (
        "a@company.test",
        "b@company.test",
        "c@company.test",
        "d@company.test",
    )
    assert built.tags == ("q4", "intro")


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"subject": "Hi\r\nBcc: victim@evil.test"}, "subject"),
        ({"subject": "Hi\nX-Evil: 1"}, "subject"),
        ({"subject": "Hi\x00"}, "subject"),
        ({"from_": "Ann\r\nBcc: v@evil.test <ann@acme.test>"}, "from"),
        ({"to": ["john@company.test\r\nBcc: v@evil.test"]}, "to"),
        ({"cc": ["x@company.test\nBcc: v@evil.test"]}, "cc"),
        ({"reply_to": ["r@acme.test\r\n"]}, "reply_to"),
        ({"headers": {"X-Note": "a\r\nBcc: v@evil.test"}}, "headers.X-Note"),
        ({"headers": {"X-No\r\nte": "a"}}, "headers"),
        ({"headers": {"Bcc": "v@evil.test"}}, "headers"),
        ({"headers": {"From": "boss@acme.test"}}, "headers"),
        ({"headers": {"Content-Type": "text/html"}}, "headers"),
        ({"headers": {"DKIM-Signature": "v=1"}}, "headers"),
        ({"headers": {"List-Unsubscribe": "<https://x>"}}, "headers"),
        ({"list_unsubscribe": "https://acme.test/u\r\nBcc: v@evil.test"}, "list_unsubscribe"),
        ({"list_unsubscribe": "http://acme.test/u"}, "list_unsubscribe"),
        ({"list_unsubscribe": "https://acme.test/u>, <mailto:x@y"}, "list_unsubscribe"),
    ],
)
def test_header_injection_is_refused(fields: dict[str, object], where: str) -> None:
    with pytest.raises(MessageError) as caught:
        build_message(draft(**fields), SENDER, "email_01JABH")
    assert caught.value.field == where


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"from_": "ann@other.test"}, "from"),
        ({"from_": "not an address"}, "from"),
        ({"to": []}, "to"),
        ({"to": ["x@company.test"] * 51}, "to"),
        ({"to": ["jörg@company.test"]}, "to"),
        ({"text": None, "html": None}, "text"),
        ({"text": "a\x00b"}, "text"),
        ({"tags": ["bad tag"]}, "tags"),
        ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
        ({"attachments": [Attachment("a.bin", "not base64!")]}, "attachments[0].content"),
        ({"attachments": [Attachment("a.bin", "", "nonsense")]}, "attachments[0].content_type"),
        ({"headers": {f"X-H{i}": "v" for i in range(21)}}, "headers"),
        ({"subject": "s" * 999}, "subject"),
    ],
)
def test_invalid_fields_name_the_field(fields: dict[str, object], where: str) -> None:
    with pytest.raises(MessageError) as caught:
        build_message(draft(**fields), SENDER, "email_01JABI")
    assert caught.value.field == where


def test_attachment_total_is_bounded() -> None:
    blob = base64.b64encode(b"x" * 600).decode()
    limits = Limits(attachment_bytes=1000)
    with pytest.raises(MessageError, match="at most 1000 bytes"):
        build_message(
            draft(attachments=[Attachment("a", blob), Attachment("b", blob)]),
            SENDER,
            "email_01J",
            limits=limits,
        )


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\report.pdf", "report.pdf"),
        ("a\r\nb.txt", "ab.txt"),
        ('quo"te.txt', "quo'te.txt"),
        ("...", "attachment"),
        ("x" * 300, "x" * 200),
    ],
)
def test_filenames_are_sanitised(name: str, clean: str) -> None:
    assert sanitise_filename(name) == clean


def test_the_message_id_is_fixed_by_the_row() -> None:
    assert message_id_for("email_01ABC", "acme.test") == "<email_01abc@acme.test>"
    one = build_message(draft(), SENDER, "email_01JABJ", now=NOW)
    two = build_message(draft(), SENDER, "email_01JABJ", now=NOW)
    assert parse(one.raw)["Message-ID"] == parse(two.raw)["Message-ID"]


def _built_or_error(subject: str, name: str, value: str) -> Built | MessageError:
    try:
        return build_message(
            draft(subject=subject, from_=f'"{name}" <ann@acme.test>', headers={"X-V": value}),
            SENDER,
            "email_01JABK",
        )
    except MessageError as exc:
        return exc


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(subject=_TEXT, name=_TEXT, value=_TEXT)
def test_no_user_text_ever_adds_a_header(subject: str, name: str, value: str) -> None:
    """Whatever the subject, display name and an X- header hold: refused, or exactly one of each
    header and the subject reads back unchanged."""
    bad = "\x7f\x85\u2028\u2029"
    controls = [
        c for s in (subject, name, value) for c in s if (ord(c) < 32 and c != "\t") or c in bad
    ]
    if controls:
        with pytest.raises(MessageError):
            build_message(
                draft(subject=subject, from_=f'"{name}" <ann@acme.test>', headers={"X-V": value}),
                SENDER,
                "email_01JABK",
            )
        return
    built = _built_or_error(subject, name, value)
    if isinstance(built, MessageError):
        assert built.field == "from"  # a quoted name parseaddr cannot take back
        return
    msg = parse(built.raw)
    head = built.raw.split(b"\r\n\r\n", 1)[0]
    names = [
        line.split(b":", 1)[0].lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]
    assert sorted(names) == sorted(
        [b"dkim-signature", b"from", b"to", b"subject", b"date", b"message-id",
         b"mime-version", b"x-v", b"content-type", b"content-transfer-encoding"]
    )  # fmt: skip
    assert msg["Subject"].split() == subject.split()  # folding may only move whitespace
