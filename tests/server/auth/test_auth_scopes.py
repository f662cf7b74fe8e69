"""Scopes of restricted keys."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.auth import scopes

SCOPE = st.sampled_from([f"{g}:{lvl}" for g in scopes.GROUPS for lvl in ("read", "write")])


def test_write_implies_read_and_star_allows_everything() -> None:
    assert scopes.allows(["credits:write"], "credits", write=False)
    assert scopes.allows(["credits:write"], "credits", write=True)
    assert scopes.allows(["credits:read"], "credits", write=False)
    assert not scopes.allows(["credits:read"], "credits", write=True)
    assert not scopes.allows(["credits:write"], "account", write=False)
    assert scopes.allows(["*"], "email-finder", write=True)
    assert not scopes.allows([], "account", write=False)


@pytest.mark.parametrize("bad", ["credits", "credits:admin", "nope:read", ":read", "*:read", ""])
def test_unknown_scopes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        scopes.normalise([bad])
    assert not re.match(scopes.scope_pattern(), bad)


@given(st.lists(SCOPE, max_size=10))
def test_normalise_is_sorted_unique_and_matches_the_pattern(granted: list[str]) -> None:
    out = scopes.normalise(granted)
    assert list(out) == sorted(set(granted))
    assert all(re.match(scopes.scope_pattern(), s) for s in out)
    assert scopes.normalise([*granted, "*"]) == ("*",)
