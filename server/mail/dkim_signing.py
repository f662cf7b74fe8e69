"""DKIM signing (RFC 6376): rsa-sha256 with relaxed/relaxed canonicalisation, the RSA step done
by OpenSSL through ``cryptography`` and the parsed key cached, so signing costs one RSA
operation and two hashes instead of dkimpy's pure-Python key parse and big-integer arithmetic.

Canonicalisation follows dkimpy's reading of the RFC (the verifier the tests use), so the body
hash is byte-for-byte the one dkimpy computes for the same message; what is signed is the
message's wire form, on which dkimpy's and OpenDKIM's readings agree.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "MIN_KEY_BITS",
    "DkimError",
    "DkimKeyError",
    "body_hash",
    "load_key",
    "relaxed_body",
    "relaxed_header_value",
    "sign_message",
    "wire_form",
]

# RFC 8301 §3.2: verifiers must not accept RSA keys shorter than 1024 bits.
MIN_KEY_BITS = 1024
_LINE = 78  # fold the signature header to RFC 5322's recommended line length
_KEY_CACHE = 256  # parsed keys kept (one per sending domain and selector in use)

_NEWLINE = re.compile(rb"\r?\n")
_LINE_END = re.compile(rb"\r\n?|\n")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP = re.compile(rb"\t[\t ]*| [\t ]+")  # runs other than one space, which stays as it is
# What may stand in d= and s= (DNS names; "_" too, which some selectors carry): nothing that
# could end a tag or the header.
_DNS_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")


class DkimError(ValueError):
    """A message, domain or selector that cannot be signed."""


class DkimKeyError(DkimError):
    """A private key that is not an unencrypted PEM RSA key of at least 1024 bits."""


@functools.lru_cache(maxsize=_KEY_CACHE)
def load_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The RSA private key of ``pem`` (PKCS#1 or PKCS#8), parsed once per distinct PEM."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise DkimKeyError(f"unusable DKIM private key: {type(exc).__name__}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"DKIM private key is not RSA ({type(key).__name__})")
    if key.key_size < MIN_KEY_BITS:
        raise DkimKeyError(f"DKIM private key has {key.key_size} bits, fewer than {MIN_KEY_BITS}")
    return key


def relaxed_header_value(value: bytes) -> bytes:
    """RFC 6376 §3.4.2 for a field value: unfolded, WSP runs made one space, ends stripped."""
    if b"\n" in value:
        value = _NEWLINE.sub(b"", value)
    if b"\t" in value or b"  " in value:
        value = _WSP.sub(b" ", value)
    return value.strip(b" ")


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 (as dkimpy reads it): CRLF line ends, no WSP at line ends, WSP runs made
    one space, no empty lines at the end, and a final CRLF unless the body is empty."""
    # Each step only when needed: on mail as the builder writes it most are no-ops, and a
    # regular expression's sub costs far more than a search for its trigger.
    if body.count(b"\n") != body.count(b"\r\n"):
        body = _NEWLINE.sub(b"\r\n", body)
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP.sub(b" ", body)
    end = len(body)
    while end >= 2 and body.startswith(b"\r\n", end - 2):
        end -= 2
    if end == 0:
        return b""
    return body[:end] + b"\r\n"


def body_hash(body: bytes) -> bytes:
    """The ``bh=`` value: base64 SHA-256 of the relaxed body."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())


def wire_form(message: bytes) -> bytes:
    """``message`` as SMTP DATA carries it (and as aiosmtplib sends it): every line end, bare
    LF and bare CR included, made CRLF, and a final CRLF. A receiver verifies these bytes, so
    they are what gets signed (a last line without CRLF keeps its trailing whitespace in
    dkimpy's canonical body, but loses it on the wire)."""
    n = message.count(b"\r\n")
    if message.count(b"\n") != n or message.count(b"\r") != n:
        message = _LINE_END.sub(b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def _split(wire: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(header fields as (name, raw value), body) of a message in wire form."""
    if wire.startswith(b"\r\n"):
        head, body = b"", wire[2:]
    else:
        head, _, body = wire.partition(b"\r\n\r\n")
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n") if head else ():
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise DkimError("message starts with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif (field := _FIELD_NAME.match(line)) is not None:
            fields.append((field[1], line[field.end() :]))
        elif line:  # the empty line after the last field of a message without a body
            raise DkimError("message has a header line without a field name")
    return fields, body


def _fold(pieces: Sequence[tuple[bytes, bytes]], column: int) -> tuple[bytes, int]:
    """``pieces`` as (separator, text) joined, a separator becoming CRLF SP where the line
    would pass :data:`_LINE`; the folded text and the column it ends at."""
    out = bytearray()
    for sep, text in pieces:
        if out and column + len(sep) + len(text) > _LINE:
            out += b"\r\n "
            column = 1
        elif out or sep:
            out += sep
            column += len(sep)
        out += text
        column += len(text)
    return bytes(out), column


def sign_message(
    message: bytes,
    *,
    domain: str,
    selector: str,
    private_key_pem: bytes,
    headers: Sequence[bytes],
    timestamp: int | None = None,
) -> bytes:
    """:func:`wire_form` of ``message`` under a ``DKIM-Signature`` field: rsa-sha256,
    relaxed/relaxed, ``i=@domain``, ``t=`` now, no ``x=``, over those of ``headers`` (names,
    From among them) that the message has, in the order given."""
    if not _DNS_NAME.fullmatch(domain) or not _DNS_NAME.fullmatch(selector):
        raise DkimError("domain and selector must be ASCII DNS names")
    key = load_key(private_key_pem)
    wire = wire_form(message)
    fields, body = _split(wire)
    values: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        values.setdefault(name.lower(), []).append(value)
    names = [h for h in dict.fromkeys(h.lower() for h in headers) if h in values]
    if b"from" not in names:
        raise DkimError("the From header field must be present and signed")
    d = domain.lower().encode("ascii")
    stamp = int(time.time()) if timestamp is None else timestamp
    tags = [
        b"v=1;",
        b"a=rsa-sha256;",
        b"c=relaxed/relaxed;",
        b"d=" + d + b";",
        b"i=@" + d + b";",
        b"q=dns/txt;",
        b"s=" + selector.encode("ascii") + b";",
        b"t=%d;" % stamp,
    ]
    # h= may fold after any colon (RFC 6376 §3.5), so each name is a piece of its own.
    h_list = [(b"", n + b":") for n in names]
    h_list[0] = (b" ", b"h=" + h_list[0][1])
    h_list[-1] = (h_list[-1][0], h_list[-1][1][:-1] + b";")
    pieces = [(b" ", t) for t in tags] + h_list
    pieces += [(b" ", b"bh=" + body_hash(body) + b";"), (b" ", b"b=")]
    value, column = _fold(pieces, len(b"DKIM-Signature:"))
    # Each name once, so its last occurrence is the one signed (RFC 6376 §5.4.2).
    signed = b"\r\n".join(n + b":" + relaxed_header_value(values[n][-1]) for n in names)
    signed += b"\r\ndkim-signature:" + relaxed_header_value(value)
    signature = base64.b64encode(key.sign(signed, padding.PKCS1v15(), hashes.SHA256()))
    first = max(_LINE - column, 0)
    chunks = [signature[:first]] if first else []
    chunks += [signature[i : i + _LINE - 1] for i in range(first, len(signature), _LINE - 1)]
    folded = b"\r\n ".join(chunks) if first else b"\r\n " + b"\r\n ".join(chunks)
    return b"DKIM-Signature:" + value + folded + b"\r\n" + wire
