"""server.db.rawsql: ``?`` placeholders renumbered for PostgreSQL, one text per dialect."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.db.rawsql import RawStatement, numbered


def test_placeholders_are_numbered_in_order() -> None:
    statement = RawStatement("UPDATE t SET a = a - ? WHERE id = ? AND a >= ?")
    assert statement.postgresql == "UPDATE t SET a = a - $1 WHERE id = $2 AND a >= $3"
    assert statement.text("postgresql") == statement.postgresql
    assert statement.text("sqlite") == statement.sql


@given(st.lists(st.text(alphabet="abc =,()", max_size=5), max_size=8))
def test_every_mark_gets_the_next_number(parts: list[str]) -> None:
    out = numbered("?".join(parts))
    assert "?" not in out
    assert out == "".join(
        part + (f"${i + 1}" if i < len(parts) - 1 else "") for i, part in enumerate(parts)
    )


def test_a_quoted_question_mark_is_refused() -> None:
    with pytest.raises(ValueError, match="literal"):
        RawStatement("SELECT '?' WHERE x = ?")
