"""The DSN parser (pure): per-recipient fields, the returned Message-ID from either returned
form, the RFC 3463 classification table, non-DSNs and hostile bytes as typed errors only."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inbound_helpers import dsn, message

from server.mail.dsn import NotADsn, classify, parse_dsn
from server.mail.inbound_parse import InboundParseError, MessageTooLarge, ParseLimits


def test_recipients_and_the_returned_headers() -> None:
    report = parse_dsn(
        dsn(
            "orig@acme.test",
            [("A@Far.test", "failed", "5.1.1"), ("b@far.test", "delayed", "4.4.1")],
        )
    )
    assert report.reporting_mta == "mx.test"
    assert report.original_message_id == "orig@acme.test"
    first, second = report.recipients
    assert (first.final_recipient, first.action, first.status, first.kind) == (
        "a@far.test",
        "failed",
        "5.1.1",
        "hard",
    )
    assert first.diagnostic_code == "smtp; 550 5.1.1 refused"
    assert (second.status, second.kind) == ("4.4.1", "soft")
    assert report.hard_bounces == (first,)


def test_returned_message_rfc822_and_encoded_status_part() -> None:
    raw = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        b"Reporting-MTA: dns; mx.far.test\r\nOriginal-Envelope-Id: env-1\r\n\r\n"
        b"Final-Recipient: rfc822;x@far.test\r\nOriginal-Recipient: rfc822;X@far.test\r\n"
        b"Action: failed\r\nStatus: 5.2.2\r\nRemote-MTA: dns; mx.far.test\r\n\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: ann@acme.test\r\nMessage-ID: <m9@acme.test>\r\n\r\nbody\r\n--B--\r\n"
    )
    report = parse_dsn(raw)
    assert report.original_envelope_id == "env-1"
    assert report.original_message_id == "m9@acme.test"
    (recipient,) = report.recipients
    assert recipient.original_recipient == "x@far.test"
    assert recipient.remote_mta == "mx.far.test"
    assert recipient.kind == "soft"  # mailbox full


def test_a_base64_status_part_is_read_as_text() -> None:
    import base64

    status = b"Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; q@far.test\r\nAction: failed\r\nStatus: 5.1.10\r\n"
    raw = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(status)
        + b"--B--\r\n"
    )
    try:
        report = parse_dsn(raw)
    except InboundParseError:
        return  # refusing an odd encoding is fine; raising anything else is not
    assert all(r.kind in ("hard", "soft", "policy", "none") for r in report.recipients)


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "kind"),
    [
        ("failed", "5.1.1", None, "hard"),
        ("failed", "5.1.2", None, "hard"),
        ("failed", "5.1.10", None, "hard"),
        ("failed", "5.2.1", None, "hard"),
        ("failed", "5.4.4", None, "hard"),
        ("failed", "5.2.2", None, "soft"),
        ("failed", "5.7.1", None, "policy"),
        ("failed", "5.7.26", None, "policy"),
        ("delayed", "4.7.0", None, "policy"),
        ("delayed", "4.2.2", None, "soft"),
        ("delayed", "5.1.1", None, "soft"),  # a delay is never permanent
        ("failed", "5.3.0", None, "soft"),
        ("failed", "5.01.001", None, "hard"),
        ("failed", None, "smtp; 550 5.1.1 user unknown", "hard"),
        ("failed", "junk", None, "soft"),
        ("failed", None, None, "soft"),
        ("delivered", "2.0.0", None, "none"),
        ("relayed", None, None, "none"),
        ("", "2.1.5", None, "none"),
        ("", None, None, "none"),
    ],
)
def test_classification_table(
    action: str, status: str | None, diagnostic: str | None, kind: str
) -> None:
    assert classify(action, status, diagnostic) == kind


def test_other_messages_are_not_dsns() -> None:
    with pytest.raises(NotADsn):
        parse_dsn(message())
    feedback = b'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\r\n\r\n--B--\r\n'
    with pytest.raises(NotADsn):
        parse_dsn(feedback)
    no_status = b'Content-Type: multipart/report; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n'
    with pytest.raises(NotADsn):
        parse_dsn(no_status)
    empty = b'Content-Type: multipart/report; boundary="B"\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n--B--\r\n'
    with pytest.raises(InboundParseError):
        parse_dsn(empty)
    with pytest.raises(MessageTooLarge):
        parse_dsn(b"x" * 200, ParseLimits(max_bytes=100))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"Final-Recipient: rfc822; a@b",
                b"Final-Recipient: ;;;",
                b"Action: failed",
                b"Status: 9.9.9",
                b"Status: 5.1.1 extra",
                b"Diagnostic-Code: =?utf-8?q?x?=",
                b"Reporting-MTA",
                b"",
                b"\xff\xfe",
                b"--B",
                b"Content-Type: message/rfc822",
                b"Content-Type: text/rfc822-headers",
            ]
        ),
        max_size=40,
    )
)
def test_hostile_reports_raise_only_typed_errors(lines: list[bytes]) -> None:
    raw = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n" + b"\r\n".join(lines)
    )
    with contextlib.suppress(InboundParseError):
        parse_dsn(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_typed_errors(raw: bytes) -> None:
    with contextlib.suppress(InboundParseError):
        parse_dsn(raw)
