"""Tag normalisation and the pure weighted-Jaccard reference."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.prospects.ranking import idf, weighted_jaccard
from server.prospects.tags import MAX_TAG_LENGTH, normalize_tag, normalize_tags, split_tags

raw_tags = st.lists(st.text(max_size=20), max_size=12)


@given(raw_tags)
def test_normalised_tags_are_clean_unique_and_stable(values: list[str]) -> None:
    tags = normalize_tags(values)
    assert len(set(tags)) == len(tags)
    for tag in tags:
        assert tag
        assert tag == tag.strip()
        assert tag == normalize_tag(tag)
        assert "  " not in tag
    assert normalize_tags(tags) == tags


@given(raw_tags)
def test_every_non_blank_input_is_represented(values: list[str]) -> None:
    tags = set(normalize_tags(values))
    assert {normalize_tag(v) for v in values if normalize_tag(v)} == tags


def test_examples() -> None:
    assert normalize_tags(["  SaaS ", "saas", "B2B\tSales", "", "ＦＩＮＴＥＣＨ"]) == (
        "saas",
        "b2b sales",
        "fintech",
    )
    assert split_tags("a; b|c,d") == ["a", " b", "c", "d"]


def test_overlong_tag_is_rejected() -> None:
    with pytest.raises(ValueError, match="longer than"):
        normalize_tags(["x" * (MAX_TAG_LENGTH + 1)])


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_idf_is_at_least_one_and_decreasing(df: int, extra: int) -> None:
    n = df + extra
    assert idf(df, n) >= 1.0
    if df > 0:
        assert idf(df, n) < idf(df - 1, n)


def test_idf_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="negative"):
        idf(-1, 3)


tag_sets = st.frozensets(st.sampled_from("abcdefgh"), max_size=8)


@given(tag_sets, tag_sets, st.dictionaries(st.sampled_from("abcdefgh"), st.floats(1, 10)))
def test_weighted_jaccard_bounds_and_symmetry(
    q: frozenset[str], p: frozenset[str], weights: dict[str, float]
) -> None:
    score = weighted_jaccard(q, p, weights, 100)
    assert 0.0 <= score <= 1.0
    assert score == weighted_jaccard(p, q, weights, 100)
    if q and q == p:
        assert score == 1.0
    if not q & p:
        assert score == 0.0


def test_rare_tags_weigh_more() -> None:
    weights = {"common": idf(90, 100), "rare": idf(2, 100)}
    query = {"common", "rare"}
    assert weighted_jaccard(query, {"rare"}, weights, 100) > weighted_jaccard(
        query, {"common"}, weights, 100
    )
    expected = weights["rare"] / (weights["rare"] + weights["common"])
    assert math.isclose(weighted_jaccard(query, {"rare"}, weights, 100), expected, abs_tol=1e-9)
