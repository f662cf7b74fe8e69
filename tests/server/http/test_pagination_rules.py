"""The one pagination contract."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.errors import InvalidRequest
from server.http.pagination import (
    DEFAULT_LIMIT,
    PageRequest,
    decode_cursor,
    encode_cursor,
    page_of,
    page_request,
)
from server.ids import is_id, new_id


def test_defaults_and_bounds() -> None:
    assert page_request({}) == PageRequest(limit=DEFAULT_LIMIT, offset=0, after=None)
    assert page_request({"limit": "100", "offset": "5"}) == PageRequest(100, 5, None)


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "1e3"},
        {"limit": "١٠"},
        {"offset": "100001"},
        {"offset": "99999999999999999999"},
        {"cursor": "!!"},
        {"cursor": "Yzp4"},
        {"cursor": "a" * 300},
    ],
)
def test_bad_values_are_400s(query: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        page_request(query)
    assert info.value.param in {"limit", "offset", "cursor"}


@given(st.sampled_from(["txn", "key", "job", "usr"]))
def test_cursor_round_trip(prefix: str) -> None:
    last = new_id(prefix)
    assert is_id(last, prefix)
    assert decode_cursor(encode_cursor(last)) == last
    assert page_request({"cursor": encode_cursor(last)}).after == last


@given(st.integers(0, 30), st.integers(1, 10))
def test_page_of_trims_and_points_at_the_last_row(count: int, limit: int) -> None:
    rows = [new_id("txn") for _ in range(min(count, limit + 1))]
    page = page_of(rows, PageRequest(limit=limit), lambda row: row)
    assert list(page.data) == rows[:limit]
    assert page.has_more == (count > limit)
    if page.has_more:
        assert page.next_cursor is not None
        assert decode_cursor(page.next_cursor) == rows[limit - 1]
    else:
        assert page.next_cursor is None


def test_ids_sort_by_time() -> None:
    earlier, later = new_id("txn", now=1000.0), new_id("txn", now=1001.0)
    assert earlier < later
    assert not is_id("txn_short", "txn")
    assert not is_id(earlier, "key")
