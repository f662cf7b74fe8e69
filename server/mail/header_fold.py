"""Plain-ASCII header folding for the headers receivers read literally (List-Unsubscribe,
Message-ID, References, X-*): folded only at the value's own whitespace, never turned into
RFC 2047 encoded words.

The ``email`` package's policy encodes any word it cannot fit on a 78-character line, so a long
unsubscribe URL became ``=?utf-8?q?=3Chttps...`` and mailbox providers (RFC 8058 one-click)
could not use it. Here a word that does not fit stays whole on its own line, up to RFC 5322's
998-octet limit; past that the value is refused (:class:`HeaderTooLong`).
"""

from __future__ import annotations

import re
from email.policy import EmailPolicy
from typing import Any

__all__ = ["LINE_LIMIT", "LINE_TARGET", "HeaderTooLong", "VerbatimPolicy", "fold_verbatim"]

LINE_LIMIT = 998  # RFC 5322 §2.1.1: octets per line, CRLF excluded
LINE_TARGET = 78  # RFC 5322 §2.1.1: what a line should not pass where it can be folded
_PRINTABLE = re.compile(r"[\t\x20-\x7e]*")
_WORDS = re.compile(r"([\t ]*)([^\t ]+)")


class HeaderTooLong(ValueError):
    """A header whose unbreakable word cannot fit on one 998-octet line."""

    def __init__(self, name: str, length: int) -> None:
        super().__init__(f"{name}: a line of {length} octets passes the {LINE_LIMIT} limit")
        self.name = name
        self.length = length


def fold_verbatim(name: str, value: str, linesep: str = "\r\n") -> str:
    """``Name: value`` plus ``linesep``, folded (a line break put before existing whitespace)
    so lines stay within 78 octets where the words allow and within 998 always; unfolding gives
    back the value exactly (ends stripped). ValueError for a value that is not printable ASCII,
    HeaderTooLong for a word that cannot fit."""
    value = value.strip(" \t")
    if not _PRINTABLE.fullmatch(value) or not _PRINTABLE.fullmatch(name) or ":" in name:
        raise ValueError(f"{name}: only printable ASCII is kept verbatim")
    lines = [f"{name}:"]
    for index, (space, word) in enumerate(_WORDS.findall(value)):
        space = " " if index == 0 else space
        if index and len(lines[-1]) + len(space) + len(word) > LINE_TARGET:
            lines.append(space + word)
        else:
            lines[-1] += space + word
    longest = max(len(line) for line in lines)
    if longest > LINE_LIMIT:
        raise HeaderTooLong(name, longest)
    return linesep.join(lines) + linesep


class VerbatimPolicy(EmailPolicy):
    """The SMTP policy, except that the headers :meth:`picks` chooses are stored as given and
    folded by :func:`fold_verbatim` (everything else as ``EmailPolicy`` does)."""

    def picks(self, name: str, value: str) -> bool:
        """Whether this header keeps its value verbatim (subclasses choose; here none)."""
        return False

    def _picked(self, name: str, value: object) -> bool:
        return type(value) is str and self.picks(name, value)

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        """Keep a picked value as the plain string (no parsing, no decoding of ``=?``)."""
        if self._picked(name, value):
            if "\r" in value or "\n" in value or len(value.splitlines()) > 1:
                raise ValueError("Header values may not contain linefeed or carriage return")
            return (name, value)
        return super().header_store_parse(name, value)

    def fold(self, name: str, value: Any) -> str:
        """Picked headers by :func:`fold_verbatim`, the rest by ``EmailPolicy``."""
        if self._picked(name, value):
            return fold_verbatim(name, value, self.linesep)
        return super().fold(name, value)  # type: ignore[no-any-return]

    def fold_binary(self, name: str, value: Any) -> bytes:
        """:meth:`fold` as ASCII bytes for picked headers."""
        if self._picked(name, value):
            return fold_verbatim(name, value, self.linesep).encode("ascii")
        return super().fold_binary(name, value)
