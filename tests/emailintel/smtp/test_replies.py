"""Reply classification: a table of real-world replies, edge cases and properties."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.models import Reason, SmtpReply, SmtpStage
from emailintel.smtp.replies import (
    DEFAULT_GREYLIST_RETRY,
    ReplyClass,
    ReplyCodeError,
    ReplyKind,
    classify,
    classify_reply,
    parse_enhanced_code,
    parse_retry_after,
)

K = ReplyKind

# (source, code, message as it follows the code, expected kind at the RCPT stage)
# fmt: off
REAL_WORLD: list[tuple[str, int, str, ReplyKind]] = [
    # Gmail
    ("gmail", 250, "2.1.5 OK a1b2c3 - gsmtp", K.ACCEPTED),
    ("gmail", 550, "5.1.1 The email account that you tried to reach does not exist. Please try\n5.1.1 double-checking the recipient's email address for typos or\n5.1.1 https://support.google.com/mail/?p=NoSuchUser a1b2 - gsmtp", K.MAILBOX_NOT_FOUND),
    ("gmail", 550, "5.2.1 The email account that you tried to reach is disabled. a1b2 - gsmtp", K.MAILBOX_DISABLED),
    ("gmail", 552, "5.2.2 The email account that you tried to reach is over quota. a1b2 - gsmtp", K.MAILBOX_FULL),
    ("gmail", 452, "4.2.2 The email account that you tried to reach is over quota. a1b2 - gsmtp", K.MAILBOX_FULL),
    ("gmail", 450, "4.2.1 The user you are trying to contact is receiving mail at a rate that\n4.2.1 prevents additional messages from being delivered. a1b2 - gsmtp", K.TEMP_FAILURE),
    ("gmail", 550, "5.7.1 [203.0.113.5] Our system has detected an unusual rate of\n5.7.1 unsolicited mail originating from your IP address. - gsmtp", K.BLOCKED),
    ("gmail", 421, "4.7.0 [203.0.113.5] Our system has detected an unusual rate of\n4.7.0 unsolicited mail originating from your IP address. - gsmtp", K.BLOCKED),
    ("gmail", 421, "4.7.0 Try again later, closing connection. (EHLO) a1b2 - gsmtp", K.TEMP_FAILURE),
    ("gmail", 553, "5.1.2 We weren't able to find the recipient domain. a1b2 - gsmtp", K.MAILBOX_NOT_FOUND),
    ("gmail", 550, "5.7.26 This mail is unauthenticated, which poses a security risk. - gsmtp", K.BLOCKED),
    ("gmail", 451, "4.3.0 Mail server temporarily rejected message. a1b2 - gsmtp", K.TEMP_FAILURE),
    # Outlook.com / Microsoft 365
    ("outlook", 550, "5.5.0 Requested action not taken: mailbox unavailable (S2017062302). [DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]", K.MAILBOX_NOT_FOUND),
    ("m365", 550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", K.MAILBOX_NOT_FOUND),
    ("m365", 550, "5.4.1 Recipient address rejected: Access denied. AS(201806281) [AM0PR01MB1234.eurprd01.prod.outlook.com]", K.MAILBOX_NOT_FOUND),
    ("outlook", 550, "5.7.1 Unfortunately, messages from [203.0.113.5] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", K.BLOCKED),
    ("m365", 550, "5.7.606 Access denied, banned sending IP [203.0.113.5]. To request removal from this list please visit https://sender.office.com/", K.BLOCKED),
    ("m365", 451, "4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77714)", K.TEMP_FAILURE),
    ("m365", 451, "4.4.4 Temporary server error. Please try again later ATTR5 [x.prod.protection.outlook.com]", K.TEMP_FAILURE),
    ("m365", 452, "4.5.3 Too many recipients (AS780090) [x.prod.protection.outlook.com]", K.TOO_MANY_RECIPIENTS),
    ("m365", 250, "2.1.5 Recipient OK", K.ACCEPTED),
    # Yahoo / AOL
    ("yahoo", 554, "delivery error: dd This user doesn't have a yahoo.com account (someone@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com", K.MAILBOX_NOT_FOUND),
    ("yahoo", 554, "delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. This mailbox is disabled (554.30). - mta4.mail.bf1.yahoo.com", K.MAILBOX_DISABLED),
    ("yahoo", 553, "5.7.1 [BL21] Connections will not be accepted from 203.0.113.5, because the ip is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes", K.BLOCKED),
    ("yahoo", 421, "4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1", K.TEMP_FAILURE),
    # Postfix (including the lab's own replies)
    ("postfix", 250, "2.1.5 Ok", K.ACCEPTED),
    ("postfix", 550, "5.1.1 <nobody@acme.test>: Recipient address rejected: User unknown in virtual mailbox table", K.MAILBOX_NOT_FOUND),
    ("postfix", 550, "5.1.0 <nobody@example.org>: Recipient address rejected: User unknown", K.MAILBOX_NOT_FOUND),
    ("postfix", 450, "4.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table", K.TEMP_FAILURE),
    ("postfix", 554, "5.7.1 <someone@gmail.com>: Relay access denied", K.BLOCKED),
    ("postfix", 554, "5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.5", K.BLOCKED),
    ("postfix", 450, "4.7.1 Client host rejected: cannot find your hostname, [203.0.113.5]", K.BLOCKED),
    ("postfix", 421, "4.7.0 mx.strict.test Error: too many errors", K.TEMP_FAILURE),
    ("postfix", 421, "4.7.0 mx.strict.test Error: too many connections from 127.0.0.1", K.TEMP_FAILURE),
    ("postfix", 452, "4.5.3 Error: too many recipients", K.TOO_MANY_RECIPIENTS),
    ("postscreen", 450, "4.3.2 Service currently unavailable", K.TEMP_FAILURE),
    ("postfix", 504, "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname", K.BLOCKED),
    ("postfix", 450, "4.1.8 <probe@nx.example>: Sender address rejected: Domain not found", K.BLOCKED),
    # postgrey
    ("postgrey", 450, "4.2.0 <info@greylist.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/greylist.test.html", K.GREYLISTED),
    ("postgrey", 451, "4.7.1 <info@greylist2.test>: Recipient address rejected: Greylisted, please try again in 15 seconds", K.GREYLISTED),
    # Exim
    ("exim", 550, "Unrouteable address", K.MAILBOX_NOT_FOUND),
    ("exim", 550, "No Such User Here", K.MAILBOX_NOT_FOUND),
    ("exim", 550, "Rejected because 203.0.113.5 is in a black list at zen.spamhaus.org", K.BLOCKED),
    ("exim", 550, "Verification failed for <probe@example.org>\nSender verify failed", K.BLOCKED),
    ("exim", 550, "Administrative prohibition", K.BLOCKED),
    ("exim", 451, "Temporary local problem - please try later", K.TEMP_FAILURE),
    ("exim", 421, "mail.example.org Too many concurrent SMTP connections; please try again later.", K.TEMP_FAILURE),
    ("exim greylist", 451, "Greylisted, please retry in 5 minutes", K.GREYLISTED),
    # Proofpoint, Mimecast, Barracuda, qmail, Exchange on-premises
    ("proofpoint", 550, "5.1.1 User Unknown", K.MAILBOX_NOT_FOUND),
    ("proofpoint", 554, "Blocked - see https://ipcheck.proofpoint.com/?ip=203.0.113.5", K.BLOCKED),
    ("mimecast", 550, "Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550", K.MAILBOX_NOT_FOUND),
    ("mimecast", 554, "Email rejected due to security policies - https://community.mimecast.com/docs/DOC-1369#554", K.BLOCKED),
    ("mimecast", 451, "Internal resources are temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451", K.TEMP_FAILURE),
    ("barracuda", 554, "Service unavailable; Client host [203.0.113.5] blocked using Barracuda Reputation; http://www.barracudanetworks.com/reputation/?r=1&ip=203.0.113.5", K.BLOCKED),
    ("barracuda", 550, "permanent failure for one or more recipients (x@example.org:blocked)", K.BLOCKED),
    ("qmail", 553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", K.BLOCKED),
    ("exchange", 550, "5.7.1 Unable to relay", K.BLOCKED),
    ("exchange", 550, "5.7.1 Requested action not taken: mailbox unavailable; no such user", K.BLOCKED),
    ("generic", 550, "Requested action not taken: mailbox unavailable", K.MAILBOX_NOT_FOUND),
    ("generic", 550, "5.0.0 Rejected", K.REJECTED),
    ("generic", 503, "5.5.1 Error: need MAIL command", K.PROTOCOL_ERROR),
    ("generic", 552, "5.5.3 Too many recipients", K.TOO_MANY_RECIPIENTS),
    ("sqlgrey", 451, "4.7.1 Greylisting in action, please come back later", K.GREYLISTED),
]
# fmt: on


def test_table_is_large_and_covers_every_kind() -> None:
    assert len(REAL_WORLD) >= 40
    assert {row[3] for row in REAL_WORLD} >= set(ReplyKind) - {K.OK}


@pytest.mark.parametrize(("source", "code", "message", "expected"), REAL_WORLD)
def test_real_world_reply(source: str, code: int, message: str, expected: ReplyKind) -> None:
    result = classify("rcpt", code, message)
    assert result.kind is expected, source


def test_full_line_with_code_prefix_parses_the_same() -> None:
    body = "5.1.1 <x@acme.test>: Recipient address rejected: User unknown"
    assert classify("rcpt", 550, f"550 {body}") == classify("rcpt", 550, body)


def test_reasons_and_permanence() -> None:
    not_found = classify("rcpt", 550, "5.1.1 User unknown")
    assert (not_found.reason, not_found.permanent) == (Reason.MAILBOX_NOT_FOUND, True)
    accepted = classify("rcpt", 250, "2.1.5 Ok")
    assert (accepted.reason, accepted.permanent) == (Reason.SMTP_ACCEPTED, False)
    blocked = classify("rcpt", 554, "5.7.1 Service unavailable; blocked using zen.spamhaus.org")
    assert (blocked.reason, blocked.permanent, blocked.backoff) == (
        Reason.BLOCKED_BY_SERVER,
        True,
        True,
    )
    full_temp = classify("rcpt", 452, "4.2.2 Mailbox full")
    assert (full_temp.reason, full_temp.permanent) == (Reason.MAILBOX_FULL, False)
    too_many = classify("rcpt", 552, "5.5.3 Too many recipients")
    assert not too_many.permanent
    assert classify("rcpt", 550, "5.0.0 Rejected").reason is None


def test_greylist_retry_after_parsed_or_defaulted() -> None:
    parsed = classify("rcpt", 451, "4.7.1 Greylisted, please try again in 15 seconds")
    assert parsed.retry_after == 15.0
    minutes = classify("rcpt", 451, "Greylisted, please retry in 5 minutes")
    assert minutes.retry_after == 300.0
    default = classify("rcpt", 450, "4.2.0 <a@b.test>: Recipient address rejected: Greylisted")
    assert default.retry_after == DEFAULT_GREYLIST_RETRY
    assert not default.backoff


def test_421_is_temporary_with_backoff() -> None:
    result = classify("rcpt", 421, "4.7.0 mx.strict.test Error: too many errors")
    assert (result.kind, result.permanent, result.backoff) == (K.TEMP_FAILURE, False, True)
    postscreen = classify("rcpt", 450, "4.3.2 Service currently unavailable")
    assert not postscreen.backoff


@pytest.mark.parametrize(
    ("stage", "code", "message", "expected"),
    [
        ("banner", 220, "mx.acme.test ESMTP Postfix", K.OK),
        ("banner", 554, "5.7.1 No SMTP service here", K.BLOCKED),
        ("banner", 554, "mx.example.org", K.BLOCKED),
        ("ehlo", 250, "mx.acme.test", K.OK),
        ("mail", 250, "2.1.0 Ok", K.OK),
        (
            "mail",
            553,
            "5.1.8 <probe@nx.example>: Sender address rejected: Domain not found",
            K.BLOCKED,
        ),
        # mailbox facts only come from RCPT: a 5.1.1 at MAIL FROM is about our sender
        ("mail", 550, "5.1.1 <probe@example.org>: User unknown", K.BLOCKED),
        ("mail", 452, "4.2.2 Mailbox full", K.TEMP_FAILURE),
        ("mail", 501, "5.5.4 Syntax: MAIL FROM:<address>", K.PROTOCOL_ERROR),
        ("rset", 250, "2.0.0 Ok", K.OK),
        ("starttls", 454, "4.7.0 TLS not available due to local problem", K.TEMP_FAILURE),
        ("rcpt", 251, "User not local; will forward", K.ACCEPTED),
    ],
)
def test_stage_matters(stage: SmtpStage, code: int, message: str, expected: ReplyKind) -> None:
    assert classify(stage, code, message).kind is expected


def test_explicit_enhanced_code_wins_over_text_and_mismatched_class_is_ignored() -> None:
    assert classify("rcpt", 550, "Rejected", enhanced_code="5.1.1").kind is K.MAILBOX_NOT_FOUND
    # a 5.1.1 stamped on a 4xx reply contradicts RFC 3463; the basic code decides
    assert classify("rcpt", 450, "5.1.1 User unknown").kind is K.TEMP_FAILURE


def test_no_code_uses_enhanced_class_or_reports_protocol_error() -> None:
    assert classify("rcpt", None, "").kind is K.PROTOCOL_ERROR
    assert classify("rcpt", None, "5.1.1 user unknown").kind is K.MAILBOX_NOT_FOUND


def test_parse_helpers() -> None:
    assert parse_enhanced_code("5.1.1 The email account\n5.1.1 more") == "5.1.1"
    assert parse_enhanced_code("sorry (#5.7.1)") == "5.7.1"
    assert parse_enhanced_code("Client host [192.168.1.2] blocked") is None
    assert parse_enhanced_code("Greylisted, try again later") is None
    assert parse_retry_after("please try again in 2 hours") == 7200.0
    assert parse_retry_after("wait 99999 hours") == 86_400.0
    assert parse_retry_after("try again later") is None


# Greylisting and deferral texts as servers send them, and the delay each asks for (None: none).
# fmt: off
RETRY_HINTS: list[tuple[str, str, float | None]] = [
    ("postgrey default", "4.2.0 <info@greylist.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/greylist.test.html", None),
    ("postgrey %s text", "4.7.1 <info@greylist2.test>: Recipient address rejected: Greylisted, please try again in 15 seconds", 15.0),
    ("postgrey %s text", "4.7.1 Greylisted, please try again in 300 seconds", 300.0),
    ("sqlgrey", "4.7.1 <a@b.test>: Recipient address rejected: Greylisted for 5 minutes (1)", 300.0),
    ("milter-greylist", "4.7.1 Greylisting in action, please come back in 00:05:00", 300.0),
    ("milter-greylist", "4.7.1 Greylisting in action, please come back in 04:30", 270.0),
    ("exim acl", "Deferred: greylisted, try again in 5 minutes", 300.0),
    ("postfix policy", "4.7.1 Client host rejected: Greylisted, retry in 5 minutes", 300.0),
    ("short unit", "4.7.1 Greylisted: please retry in 15s", 15.0),
    ("after", "4.7.1 greylisted, come back after 120 seconds", 120.0),
    ("hours", "4.7.1 Please retry after 1 hour", 3600.0),
    ("at least", "4.7.1 Greylisted - try again at least 60 seconds later", 60.0),
    ("wait", "4.7.0 Please wait 2 minutes before retrying", 120.0),
    ("rspamd", "4.7.1 Try again later", None),
    ("gmail", "4.7.28 Our system has detected an unusual rate of unsolicited mail. Try again later", None),
    ("rate window", "4.7.1 You have exceeded 100 messages in 10 minutes", None),
    ("quota", "4.2.2 Mailbox full", None),
    ("code only", "4.7.1 Greylisted: 4.7.1", None),
    ("silly", "Greylisted, please try again in 999999 hours", 86_400.0),
]
# fmt: on


@pytest.mark.parametrize(("source", "message", "expected"), RETRY_HINTS)
def test_retry_hints_of_real_servers(source: str, message: str, expected: float | None) -> None:
    assert parse_retry_after(message) == expected, source


@given(st.text(max_size=300))
def test_retry_hint_is_bounded_for_any_text(message: str) -> None:
    hint = parse_retry_after(message)
    assert hint is None or 0 <= hint <= 86_400.0


@given(
    st.integers(min_value=0, max_value=999_999),
    st.sampled_from(["s", "seconds", "min", "minutes", "h", "hours"]),
)
def test_retry_hint_reads_any_number_and_unit(number: int, unit: str) -> None:
    per = {"s": 1, "m": 60, "h": 3600}[unit[0]]
    hint = parse_retry_after(f"Greylisted, please try again in {number} {unit}")
    assert hint == min(number * per, 86_400.0)


@pytest.mark.parametrize("code", [0, 199, 600, 1000, -250, True])
def test_bad_code_raises(code: int) -> None:
    with pytest.raises(ReplyCodeError):
        classify("rcpt", code, "x")


@pytest.mark.parametrize("enhanced", ["", "5.1", "x.1.1", "6.1.1", "5.1.1.1"])
def test_bad_enhanced_code_raises(enhanced: str) -> None:
    with pytest.raises(ReplyCodeError):
        classify("rcpt", 550, "x", enhanced_code=enhanced)


def test_bad_stage_raises() -> None:
    with pytest.raises(ReplyCodeError):
        classify("data", 250, "ok")  # type: ignore[arg-type]


_stages = st.sampled_from(get_args(SmtpStage))
_codes = st.one_of(st.none(), st.integers(min_value=200, max_value=599))


@given(stage=_stages, code=_codes, text=st.text(max_size=200))
def test_classify_is_total(stage: SmtpStage, code: int | None, text: str) -> None:
    result = classify(stage, code, text)
    assert isinstance(result, ReplyClass)
    if code is not None and code < 400:
        assert result.kind in (K.ACCEPTED, K.OK)
    if code is not None and code >= 400:
        assert result.kind not in (K.ACCEPTED, K.OK)
        assert result.permanent is (code >= 500 and result.kind is not K.TOO_MANY_RECIPIENTS)
    if result.kind is K.GREYLISTED:
        assert result.retry_after is not None
    if stage != "rcpt":
        assert result.kind not in (K.MAILBOX_NOT_FOUND, K.MAILBOX_FULL, K.MAILBOX_DISABLED)


@given(
    stage=_stages,
    code=st.integers(min_value=500, max_value=599),
    detail=st.integers(min_value=0, max_value=999),
    text=st.text(max_size=120),
    explicit=st.booleans(),
)
def test_5_7_x_is_never_mailbox_not_found(
    stage: SmtpStage, code: int, detail: int, text: str, explicit: bool
) -> None:
    enhanced = f"5.7.{detail}"
    if explicit:
        result = classify(stage, code, text + " user unknown", enhanced_code=enhanced)
    else:
        result = classify(stage, code, f"{enhanced} {text} no such user")
    assert result.kind is K.BLOCKED
    assert result.reason is Reason.BLOCKED_BY_SERVER


def test_classify_reply_uses_the_recorded_enhanced_code() -> None:
    reply = SmtpReply(stage="rcpt", code=550, enhanced_code="5.1.1", message="Rejected")
    assert classify_reply(reply).kind is K.MAILBOX_NOT_FOUND
    banner = SmtpReply(stage="banner", code=554, message="5.7.1 blocked using zen.spamhaus.org")
    assert classify_reply(banner).kind is K.BLOCKED
