"""Headers receivers read literally (List-Unsubscribe, Message-ID, References, X-*) go out as
plain ASCII: folded only at their own whitespace, never RFC 2047 encoded words, every line
within 998 octets (78 where a fold is possible), and the DKIM signature still verifies."""

from __future__ import annotations

import email.message
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default

import dkim
import pytest
from draft_support import draft
from header_support import assert_line_lengths, raw_value
from hypothesis import given, settings
from hypothesis import strategies as st
from mail_support import SELECTOR, dkim_dns, signing_key

from server.mail.header_fold import HeaderTooLong, VerbatimPolicy, fold_verbatim
from server.mail.message import (
    MAX_UNSUBSCRIBE_URL,
    POLICY,
    MessageError,
    Sender,
    build_message,
    dkim_sign,
)

SENDER = Sender("acme.test", SELECTOR, signing_key()[0])
_URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _parse(raw: bytes) -> email.message.EmailMessage:
    msg = BytesParser(policy=default).parsebytes(raw)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def _unfold(folded: str) -> str:
    return folded.removesuffix("\r\n").replace("\r\n", "")


def test_short_values_stay_on_one_line() -> None:
    assert fold_verbatim("List-Unsubscribe", "<https://a.test/u/x>") == (
        "List-Unsubscribe: <https://a.test/u/x>\r\n"
    )
    assert fold_verbatim("X-Empty", "  ") == "X-Empty:\r\n"


def test_lists_fold_between_elements_and_unfold_exactly() -> None:
    ids = " ".join(f"<{'m' * 25}{i}@{'d' * 25}.test>" for i in range(6))
    folded = fold_verbatim("References", ids)
    lines = folded.removesuffix("\r\n").split("\r\n")
    assert len(lines) == 6
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(" <") for line in lines[1:])  # a fold only before whitespace
    assert _unfold(folded) == f"References: {ids}"


def test_mailto_and_https_forms_fold_after_the_comma() -> None:
    https = "https://bavlio.example.com/u/" + "t" * 60
    value = f"<mailto:unsubscribe+{'x' * 30}@acme.test>, <{https}>"
    folded = fold_verbatim("List-Unsubscribe", value)
    assert folded == (
        f"List-Unsubscribe: <mailto:unsubscribe+{'x' * 30}@acme.test>,\r\n <{https}>\r\n"
    )
    assert "=?" not in folded
    # The header signs and verifies as folded (both List-Unsubscribe headers are signed).
    msg = EmailMessage(policy=POLICY)
    msg["From"] = "ann@acme.test"
    msg["To"] = "john@company.test"
    msg["Subject"] = "Hi"
    msg["List-Unsubscribe"] = value
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content("hi\n")
    signed = dkim_sign(msg.as_bytes(policy=POLICY), SENDER)
    assert folded.encode() in signed
    assert dkim.verify(signed, dnsfunc=dkim_dns)
    assert _parse(signed)["List-Unsubscribe"] == value
    assert not dkim.verify(signed.replace(b",\r\n <https", b",\r\n <http"), dnsfunc=dkim_dns)


def test_tabs_are_kept_and_a_long_word_gets_its_own_line() -> None:
    word = "w" * 120
    folded = fold_verbatim("X-Trace", f"a\tb {word} c")
    assert folded == f"X-Trace: a\tb\r\n {word}\r\n c\r\n"
    assert _unfold(folded) == f"X-Trace: a\tb {word} c"


def test_a_word_past_998_octets_or_non_ascii_is_refused() -> None:
    assert fold_verbatim("X-A", "w" * 993).index("\r\n") == 998
    with pytest.raises(HeaderTooLong) as caught:
        fold_verbatim("X-A", "w" * 994)
    assert (caught.value.name, caught.value.length) == ("X-A", 999)
    with pytest.raises(ValueError, match="printable ASCII"):
        fold_verbatim("X-A", "Grüße")
    with pytest.raises(ValueError, match="printable ASCII"):
        fold_verbatim("X-A", "a\x00b")


def test_the_base_policy_picks_nothing_and_refuses_line_breaks() -> None:
    base = VerbatimPolicy(linesep="\r\n")
    assert not base.picks("List-Unsubscribe", "<https://a.test>")
    assert "=?" in base.fold("X-A", "w" * 100)  # the email package's own folding
    with pytest.raises(ValueError, match="linefeed"):
        POLICY.header_store_parse("X-A", "a\nb")
    assert POLICY.fold_binary("X-A", "w" * 100) == b"X-A: " + b"w" * 100 + b"\r\n"
    stored = POLICY.header_store_parse("X-A", "Grüße")  # not picked: a header object
    assert POLICY.fold_binary(*stored) == b"X-A: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"


@settings(max_examples=120, deadline=None)
@given(
    length=st.integers(20, 900),
    alphabet=st.text(st.sampled_from(_URL_SAFE), min_size=1, max_size=64),
    ids=st.integers(1, 12),
)
def test_any_unsubscribe_url_goes_out_exact_plain_and_signed(
    length: int, alphabet: str, ids: int
) -> None:
    """List-Unsubscribe, References and an X- header built from URLs of 20..900 characters:
    exact when parsed and in the raw bytes, no encoded word, lines in bounds, DKIM verifies."""
    head = "https://bavlio.example.com/u/"
    token = (alphabet * (length // len(alphabet) + 1))[: max(1, length - len(head))]
    url = head + token
    references = " ".join(f"<{token[:60]}.{i}@acme.test>" for i in range(ids))  # <= 998
    built = build_message(
        draft(
            list_unsubscribe=url,
            headers={"References": references, "In-Reply-To": f"<{token[:200]}.0@acme.test>"},
        ),
        SENDER,
        "email_01JHDR",
    )
    raw = built.raw
    assert b"=?" not in raw.partition(b"\r\n\r\n")[0]
    assert_line_lengths(raw)
    assert raw_value(raw, "List-Unsubscribe") == f"<{url}>".encode()
    assert raw_value(raw, "List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"
    assert raw_value(raw, "References") == references.encode()
    msg = _parse(raw)
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["References"] == references
    assert msg["Message-ID"] == built.message_id
    assert dkim.verify(raw, dnsfunc=dkim_dns)


def test_the_longest_unsubscribe_url_fills_one_line_and_one_more_is_refused() -> None:
    url = "https://a.test/u/" + "t" * (MAX_UNSUBSCRIBE_URL - len("https://a.test/u/"))
    built = build_message(draft(list_unsubscribe=url), SENDER, "email_01JHDS")
    line = f"List-Unsubscribe: <{url}>".encode()
    assert len(line) == 998
    assert b"\r\n" + line + b"\r\n" in built.raw
    assert dkim.verify(built.raw, dnsfunc=dkim_dns)
    with pytest.raises(MessageError) as caught:
        build_message(draft(list_unsubscribe=url + "t"), SENDER, "email_01JHDS")
    assert caught.value.field == "list_unsubscribe"
    assert str(MAX_UNSUBSCRIBE_URL) in caught.value.message


@pytest.mark.parametrize(
    ("headers", "where"),
    [
        ({"X-Token": "t" * 990}, "headers.X-Token"),
        ({"References": "<a@b.test> <" + "r" * 990 + "@b.test>"}, "headers.References"),
        ({"In-Reply-To": "<jörg@b.test>"}, "headers.In-Reply-To"),
        ({"References": "<a@b.test> <ü@b.test>"}, "headers.References"),
    ],
)
def test_caller_headers_that_cannot_go_out_plain_are_refused(
    headers: dict[str, str], where: str
) -> None:
    with pytest.raises(MessageError) as caught:
        build_message(draft(headers=headers), SENDER, "email_01JHDT")
    assert caught.value.field == where


def test_ascii_x_headers_stay_plain_and_non_ascii_ones_are_encoded_words() -> None:
    tracking = "https://bavlio.example.com/t/c/" + "c" * 120
    built = build_message(
        draft(headers={"X-Tracking": tracking, "X-Note": "Grüße aus Köln"}),
        SENDER,
        "email_01JHDU",
    )
    assert raw_value(built.raw, "X-Tracking") == tracking.encode()
    assert raw_value(built.raw, "X-Note").startswith(b"=?utf-8?")
    msg = _parse(built.raw)
    assert msg["X-Tracking"] == tracking
    assert msg["X-Note"] == "Grüße aus Köln"
    assert_line_lengths(built.raw)
    assert dkim.verify(built.raw, dnsfunc=dkim_dns)


def test_a_long_message_id_stays_one_plain_word() -> None:
    domain = ".".join(["d" * 60] * 4) + ".test"
    sender = Sender(domain, SELECTOR, signing_key()[0])
    built = build_message(draft(from_=f"ann@{domain}"), sender, "email_01JHDV")
    assert len(built.message_id) > 78
    assert raw_value(built.raw, "Message-ID") == built.message_id.encode()
    assert_line_lengths(built.raw)
