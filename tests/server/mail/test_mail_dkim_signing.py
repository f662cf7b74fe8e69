"""The DKIM signer: dkimpy verifies what it signs (any header text, body whitespace, line ends
and lengths), its canonical body and headers are byte-for-byte dkimpy's, the header it writes
(tags, signed headers, folding), tampering caught, and every refusal typed."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable

import dkim
import pytest
from aiosmtplib.protocol import normalize_message_line_endings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st
from mail_support import SELECTOR, dkim_dns, signing_key

from server.mail.dkim_signing import (
    DkimError,
    DkimKeyError,
    body_hash,
    load_key,
    relaxed_body,
    relaxed_header_value,
    sign_message,
    wire_form,
)
from server.mail.message import SIGNED_HEADERS, Sender, dkim_sign

PEM = signing_key()[0]
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")

# A throwaway 512-bit key (too short for DKIM, RFC 8301): only ever refused.
SHORT_KEY = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOQIBAAJBAMv5epW5z2gGrsG2o8MSeoeJ0uCq4YfF8Id1spRilCE719HfJ1BU
YvNqzwlYcPlSFk3p7MNL98m15NPktwUyyQ0CAwEAAQJAWSKBVjKnlx7seUx1zcYi
c15gH7us6KcwEBH34u4dK1PypIjGAtu4No4L0vQpdmfQZ/MGvFwISubiZDZWudy7
4QIhAOevpQiTdUhSVYJY/nDRTkwfwCuDyvP4fU9vbtWq7O/JAiEA4WFZe02O6/va
4Xed4zULkXlsp/csO6HREaaQ1Nz9mSUCICvPyiyB/fasIyFgBNV+rwi0JFnWNUXH
YqLn1pSvGtkJAiA29/dLC2+APrzzoKjxcU6Q/HxzuuUe5iiHlYhdYki3wQIgH9YY
pzC6c0Y19MufcPdlzizrpun0oKngom2pIB30Zak=
-----END RSA PRIVATE KEY-----
"""

MESSAGE = (
    b"From: Ann <ann@acme.test>\r\n"
    b"To: john@company.test\r\n"
    b"Subject:  Hello \t there \r\n"
    b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
    b"X-Other: not signed\r\n"
    b"\r\n"
    b"Hi John,  \r\nhow are you?\r\n\r\n\r\n"
)


def signed(message: bytes, **kw: object) -> bytes:
    args: dict[str, object] = {
        "domain": "acme.test",
        "selector": SELECTOR,
        "private_key_pem": PEM,
        "headers": SIGNED_HEADERS,
    }
    args.update(kw)
    return sign_message(message, **args)  # type: ignore[arg-type]


def tags(raw: bytes) -> dict[bytes, bytes]:
    """The tags of the DKIM-Signature heading ``raw``, unfolded and without whitespace."""
    first, *rest = raw.split(b"\r\n")
    lines = [first]
    for line in rest:
        if line[:1] not in (b" ", b"\t"):
            break
        lines.append(line)
    value = re.sub(rb"\s+", b"", b"".join(lines).split(b":", 1)[1])
    return dict(t.split(b"=", 1) for t in value.split(b";") if t)


def test_a_signed_message_verifies_with_the_expected_tags() -> None:
    raw = signed(MESSAGE, timestamp=1_796_000_000)
    assert dkim.verify(raw, dnsfunc=dkim_dns)
    sig = tags(raw)
    assert sig[b"v"] == b"1"
    assert sig[b"a"] == b"rsa-sha256"
    assert sig[b"c"] == b"relaxed/relaxed"
    assert sig[b"d"] == b"acme.test"
    assert sig[b"i"] == b"@acme.test"
    assert sig[b"s"] == SELECTOR.encode()
    assert sig[b"t"] == b"1796000000"
    assert b"x" not in sig
    assert b"l" not in sig
    assert sig[b"h"] == b"from:to:subject:date"  # SIGNED_HEADERS' order, present ones only
    assert sig[b"bh"] == body_hash(b"Hi John,  \r\nhow are you?\r\n\r\n\r\n")


def test_the_header_is_folded_within_78_columns() -> None:
    message = b"".join(f"{h.decode()}: {h.decode()} value\r\n".encode() for h in SIGNED_HEADERS) + (
        b"\r\nbody\r\n"
    )
    raw = signed(message, domain="a-rather-long-sending-domain-name.example.test")
    header = raw.split(b"\r\nfrom:", 1)[0]
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    assert tags(raw)[b"h"] == b":".join(SIGNED_HEADERS)
    assert dkim.verify(raw, dnsfunc=dkim_dns)


def test_without_a_timestamp_t_is_now() -> None:
    before = int(time.time())
    stamp = int(tags(signed(MESSAGE))[b"t"])
    assert before <= stamp <= int(time.time())


def test_what_is_signed_is_the_wire_form_of_the_message() -> None:
    """A last line without CRLF and with trailing whitespace: signed as SMTP will carry it
    (CRLF added, so the whitespace is at a line end), which OpenDKIM also checks against."""
    raw = signed(MESSAGE.replace(b"\r\n\r\n\r\n", b"\n last  \rline \t"))
    assert raw.endswith(b"how are you?\r\n last  \r\nline \t\r\n")
    wire_body = b"Hi John,  \r\nhow are you?\r\n last  \r\nline \t\r\n"
    assert tags(raw)[b"bh"] == body_hash(wire_body) != body_hash(wire_body[:-2])
    assert dkim.verify(raw, dnsfunc=dkim_dns)


def test_dkimpy_s_own_signature_has_the_same_body_hash() -> None:
    theirs = dkim.sign(
        MESSAGE, SELECTOR.encode(), b"acme.test", PEM, canonicalize=(b"relaxed", b"relaxed")
    )
    assert tags(theirs + MESSAGE)[b"bh"] == tags(signed(MESSAGE))[b"bh"]
    assert wire_form(MESSAGE) == MESSAGE


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r.replace(b"how are you", b"how are You"),
        lambda r: r.replace(b"Subject:  Hello", b"Subject:  Hullo"),
        lambda r: r.replace(b"From: Ann", b"From: Bob"),
        # a From below the signed one is the one a verifier reads
        lambda r: r.replace(b"\r\nTo:", b"\r\nFrom: Eve <eve@evil.test>\r\nTo:"),
    ],
)
def test_tampering_with_a_signed_part_fails(tamper: Callable[[bytes], bytes]) -> None:
    raw = signed(MESSAGE)
    assert dkim.verify(raw, dnsfunc=dkim_dns)
    assert not dkim.verify(tamper(raw), dnsfunc=dkim_dns)


def test_changing_unsigned_headers_or_whitespace_still_verifies() -> None:
    raw = signed(MESSAGE)
    assert dkim.verify(raw.replace(b"not signed", b"changed"), dnsfunc=dkim_dns)
    assert dkim.verify(raw.replace(b"how are", b"how \t are"), dnsfunc=dkim_dns)


def test_a_repeated_header_signs_its_last_occurrence() -> None:
    message = b"Subject: first\r\n" + MESSAGE.replace(b"Subject:  Hello", b"Subject: last")
    raw = signed(message)
    assert dkim.verify(raw, dnsfunc=dkim_dns)
    assert not dkim.verify(raw.replace(b"Subject: last", b"Subject: lost"), dnsfunc=dkim_dns)
    assert dkim.verify(raw.replace(b"Subject: first", b"Subject: fir"), dnsfunc=dkim_dns)


def test_the_builder_signs_through_the_signer() -> None:
    sender = Sender("ACME.test", SELECTOR, PEM)
    raw = dkim_sign(MESSAGE, sender)
    assert raw.endswith(MESSAGE)
    assert tags(raw)[b"d"] == b"acme.test"
    assert dkim.verify(raw, dnsfunc=dkim_dns)


def test_a_key_is_parsed_once_per_pem() -> None:
    assert load_key(PEM) is load_key(bytes(bytearray(PEM)))
    assert load_key.cache_info().maxsize == 256


def test_pkcs8_and_pkcs1_keys_both_sign() -> None:
    key = serialization.load_pem_private_key(PEM, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert pkcs8 != PEM
    assert dkim.verify(signed(MESSAGE, private_key_pem=pkcs8), dnsfunc=dkim_dns)


def _ec_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_key() -> bytes:
    key = serialization.load_pem_private_key(PEM, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


@pytest.mark.parametrize(
    ("pem", "why"),
    [
        (b"", "unusable"),
        (b"not a key", "unusable"),
        (PEM.replace(b"M", b"N", 3), "unusable"),
        (SHORT_KEY, "512 bits"),
        (_ec_key(), "not RSA"),
        (_encrypted_key(), "unusable"),
    ],
)
def test_an_unusable_key_is_a_key_error(pem: bytes, why: str) -> None:
    with pytest.raises(DkimKeyError, match=why):
        signed(MESSAGE, private_key_pem=pem)
    with pytest.raises(DkimKeyError):
        dkim_sign(MESSAGE, Sender("acme.test", SELECTOR, pem))


@pytest.mark.parametrize(
    ("message", "kw", "why"),
    [
        (MESSAGE.replace(b"From: Ann <ann@acme.test>\r\n", b""), {}, "From"),
        (MESSAGE, {"headers": (b"to", b"subject")}, "From"),
        (b"\r\n" + MESSAGE, {}, "From"),
        (b" folded\r\n" + MESSAGE, {}, "continuation"),
        (b"no colon here\r\n" + MESSAGE, {}, "field name"),
        (MESSAGE, {"domain": "acme.test; x=1"}, "DNS names"),
        (MESSAGE, {"selector": "s\r\nBcc: x"}, "DNS names"),
        (MESSAGE, {"domain": "zoë.test"}, "DNS names"),
        (MESSAGE, {"selector": ""}, "DNS names"),
    ],
)
def test_an_unsignable_message_is_a_dkim_error(
    message: bytes, kw: dict[str, object], why: str
) -> None:
    with pytest.raises(DkimError, match=why) as caught:
        signed(message, **kw)
    assert not isinstance(caught.value, DkimKeyError)


# Header text: printable ASCII or UTF-8 with spaces and tabs, optionally folded.
_WORD = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30
).map(lambda s: s.encode())
_WSP = st.sampled_from([b" ", b"\t", b"  ", b" \t ", b"\r\n ", b"\r\n\t", b"\n "])
_VALUE = st.lists(st.tuples(_WSP, _WORD), max_size=6).map(lambda p: b"".join(a + b for a, b in p))
# Body lines: any bytes but CR/LF, with trailing whitespace and long lines among them.
_LINE_TEXT = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),  # bare CRs among them
    st.sampled_from([b"", b" ", b"\t", b"x  ", b"a \t b\t", b"y" * 1200]),
)
_EOL = st.sampled_from([b"\r\n", b"\n"])
_BODY = st.lists(st.tuples(_LINE_TEXT, _EOL), max_size=12).flatmap(
    lambda lines: st.sampled_from([b"", b"\r\n", b"\n\n", b"tail  "]).map(
        lambda end: b"".join(a + b for a, b in lines) + end
    )
)


@settings(max_examples=60, deadline=None)
@given(subject=_VALUE, to=_VALUE, body=_BODY, eol=_EOL)
def test_any_headers_and_body_verify(subject: bytes, to: bytes, body: bytes, eol: bytes) -> None:
    head = [b"From: Ann <ann@acme.test>", b"To:" + to, b"Subject:" + subject, b"X-A: b"]
    message = eol.join(head) + eol + eol + body
    raw = signed(message)
    assert dkim.verify(raw, dnsfunc=dkim_dns)


@settings(max_examples=300, deadline=None)
@given(body=_BODY)
def test_the_canonical_body_is_dkimpys(body: bytes) -> None:
    message = b"From: a@acme.test\r\n\r\n" + body
    theirs = RELAXED.canonicalize_body(dkim.rfc822_parse(message)[1])
    assert relaxed_body(body) == theirs
    assert body_hash(body) == base64.b64encode(hashlib.sha256(theirs).digest())


@settings(max_examples=300, deadline=None)
@given(value=_VALUE)
def test_a_canonical_header_value_is_dkimpys(value: bytes) -> None:
    [(name, theirs)] = RELAXED.canonicalize_headers([(b"Subject", value + b"\r\n")])
    assert name == b"subject"
    assert relaxed_header_value(value) + b"\r\n" == theirs


@settings(max_examples=300, deadline=None)
@given(message=st.binary(max_size=200) | _BODY)
def test_the_wire_form_is_what_aiosmtplib_sends(message: bytes) -> None:
    assert wire_form(message) == normalize_message_line_endings(message)
