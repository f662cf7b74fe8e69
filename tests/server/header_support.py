"""Checks on a message's header block as it goes on the wire: raw field values unfolded from
the bytes, and RFC 5322 line lengths (998 always, 78 wherever a line could have been folded)."""

from __future__ import annotations

import re

_WORD_LINE = re.compile(rb"([!-9;-~]+:)? ?[\t ]?[^\t ]+")  # one word: nothing to fold at


def header_block(raw: bytes) -> bytes:
    """The header section of ``raw`` (CRLF line ends), without the blank line."""
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep, "no end of headers"
    return head


def raw_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Every header field as (lower-case name, value unfolded by removing CRLF, as sent)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header_block(raw).split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name.lower(), value))
    return fields


def raw_value(raw: bytes, name: str) -> bytes:
    """The one ``name`` field's unfolded value (its leading space dropped)."""
    found = [v for n, v in raw_fields(raw) if n == name.lower().encode()]
    assert len(found) == 1, f"{name}: {len(found)} fields"
    return found[0].removeprefix(b" ")


def assert_line_lengths(raw: bytes) -> None:
    """Every header line within 998 octets; a line past 78 holds a single unbreakable word."""
    for line in header_block(raw).split(b"\r\n"):
        assert len(line) <= 998, line[:80]
        if len(line) > 78:
            assert _WORD_LINE.fullmatch(line), line[:80]
