"""Tag normalisation (pure): one spelling per tag so overlap means the same thing everywhere."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["MAX_TAG_LENGTH", "normalize_tag", "normalize_tags", "split_tags"]

MAX_TAG_LENGTH = 64
_SPACES = re.compile(r"\s+")
_SEPARATORS = re.compile(r"[;,|]")


def normalize_tag(value: str) -> str:
    """NFKC, lower-case, trimmed, inner whitespace collapsed to one space; '' if nothing is left."""
    text = unicodedata.normalize("NFKC", value).lower()
    return _SPACES.sub(" ", text).strip()


def normalize_tags(values: Iterable[str]) -> tuple[str, ...]:
    """Normalise every tag, drop empty ones and duplicates, keep first-seen order.

    Raises ``ValueError`` for a tag longer than :data:`MAX_TAG_LENGTH`.
    """
    seen: dict[str, None] = {}
    for value in values:
        tag = normalize_tag(value)
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters")
        if tag:
            seen.setdefault(tag, None)
    return tuple(seen)


def split_tags(value: str) -> list[str]:
    """Split a flat cell (CSV) on ``;``, ``,`` or ``|`` into raw tags."""
    return _SEPARATORS.split(value)
