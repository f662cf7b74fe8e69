"""One pagination contract for every list (pure): ``limit`` (1–100, default 20), an opaque
``cursor`` (the next page after the last one) and ``offset`` (rows skipped, after the cursor when
both are given); answers carry ``data``, ``has_more`` and ``next_cursor``.

Lists are ordered newest first by id (ids sort by creation time), so a cursor is the last id
returned, base64url-encoded with a version tag; a malformed cursor is a 400, never a query.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from server.errors import InvalidRequest
from server.ids import ID_PATTERN

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "Page",
    "PageRequest",
    "decode_cursor",
    "encode_cursor",
    "page_of",
    "page_request",
    "paged_request",
]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 100_000
_TAG = "c1:"

T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    """What the client asked for: ``limit`` and at most one of ``offset`` / ``after`` (an id)."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page: the rows, whether more follow, and the cursor for the next page."""

    data: Sequence[T]
    has_more: bool
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    """The opaque cursor after ``last_id``."""
    return base64.urlsafe_b64encode((_TAG + last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id a cursor points after; InvalidRequest when it is not one of ours."""
    if len(cursor) > 200:
        raise InvalidRequest("cursor_invalid", "The cursor is malformed.", param="cursor")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("cursor_invalid", "The cursor is malformed.", param="cursor") from None
    last = text.removeprefix(_TAG)
    if not text.startswith(_TAG) or not ID_PATTERN.match(last):
        raise InvalidRequest("cursor_invalid", "The cursor is malformed.", param="cursor")
    return last


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise InvalidRequest(
            "parameter_invalid",
            f"Invalid {name}: must be an integer from {low} to {high}.",
            param=name,
        )
    return int(raw)


def page_request(query: Mapping[str, str]) -> PageRequest:
    """Read ``limit``, ``offset`` and ``cursor`` from a query string (400s for bad values)."""
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(query, "offset", 0, 0, MAX_OFFSET)
    cursor = query.get("cursor")
    if cursor is not None and offset:
        raise InvalidRequest("parameter_invalid", "Use cursor or offset, not both.", param="cursor")
    return PageRequest(limit=limit, offset=offset, after=decode_cursor(cursor) if cursor else None)


def paged_request(query: Mapping[str, str]) -> PageRequest:
    """:func:`page_request`, plus the seed's ``page`` (1-based) and ``page_size`` (1–100):
    ``page_size`` overrides ``limit``, and ``page`` skips ``(page - 1) * size`` rows more (after
    any ``offset``); a cursor with a page past the first is a 400 like a cursor with an offset."""
    if "page" not in query and "page_size" not in query:
        return page_request(query)
    base = page_request({k: v for k, v in query.items() if k not in ("limit", "cursor")})
    limit = _int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    size = _int(query, "page_size", limit, 1, MAX_LIMIT)
    page = _int(query, "page", 1, 1, MAX_OFFSET // MAX_LIMIT + 1)
    offset = base.offset + (page - 1) * size
    cursor = query.get("cursor")
    if cursor is not None and offset:
        raise InvalidRequest(
            "parameter_invalid", "Use cursor or offset/page, not both.", param="cursor"
        )
    return PageRequest(limit=size, offset=offset, after=decode_cursor(cursor) if cursor else None)


def page_of(rows: Sequence[T], request: PageRequest, id_of: Callable[[T], str]) -> Page[T]:
    """Trim rows fetched with ``limit + 1`` into a page with its ``next_cursor``."""
    more = len(rows) > request.limit
    data = rows[: request.limit]
    cursor = encode_cursor(id_of(data[-1])) if more and data else None
    return Page(data=data, has_more=more, next_cursor=cursor)
