"""Threading by Message-ID references (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.mail.threads import candidate_ids, thread_for


def _new() -> str:
    return "new"


def test_in_reply_to_wins_then_newest_reference_then_own_id() -> None:
    known = {"a": "t1", "b": "t2", "self": "t3"}
    assert thread_for("x", ["b"], ["a"], known, _new) == ("t2", False)
    assert thread_for("x", [], ["b", "a"], known, _new) == ("t1", False)
    assert thread_for("self", [], ["zz"], known, _new) == ("t3", False)
    assert thread_for("x", ["unknown"], ["other"], known, _new) == ("new", True)
    assert thread_for(None, [], [], known, _new) == ("new", True)


def test_candidates_are_deduplicated_in_order() -> None:
    assert candidate_ids("m", ["a"], ["b", "a", "c"]) == ["a", "c", "b", "m"]


@given(
    st.one_of(st.none(), st.text(max_size=5)),
    st.lists(st.text(max_size=5), max_size=5),
    st.lists(st.text(max_size=5), max_size=5),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=5),
)
def test_a_known_candidate_is_always_found(
    mid: str | None, irt: list[str], refs: list[str], known: dict[str, str]
) -> None:
    thread, created = thread_for(mid, irt, refs, known, _new)
    hits = [known[c] for c in candidate_ids(mid, irt, refs) if c in known]
    assert created is (not hits)
    assert thread == (hits[0] if hits else "new")
