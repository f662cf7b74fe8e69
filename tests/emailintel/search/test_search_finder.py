"""find_linkedin end to end against the search lab, the query ladder and its error paths."""

from __future__ import annotations

from typing import Any

import pytest
from lab.searchlab import SearchLab

from emailintel.errors import PersonNameError, SearchQueryError, SearchRateLimited
from emailintel.search import engine_from_env, find_linkedin, query_ladder
from emailintel.search.engines import Backoff, HttpSearchEngine
from emailintel.search.finder import MATCH_THRESHOLD

BACKENDS = ["duckduckgo", "searxng", "brave"]


def _case(cases: dict[str, dict[str, Any]], tag: str, n: int = 0) -> dict[str, Any]:
    """The n-th labelled case carrying the tag (ids change when the data is regenerated)."""
    hard = {"none", "moved_silent", "moved_mentioned", "twin", "custom_slug"} - {tag}
    found = [c for c in cases.values() if tag in c["tags"] and c["tags"][0] not in hard]
    assert len(found) > n, f"evaluation set has no case tagged {tag!r}"
    return found[n]


def _engine(lab: SearchLab, backend: str) -> HttpSearchEngine:
    async def no_wait(_: float) -> None:
        return None

    return engine_from_env(lab.env(backend), backoff=Backoff(retries=2, base=0.0), sleep=no_wait)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_nickname_profile_found_with_one_query(
    lab: SearchLab, eval_cases: dict[str, dict[str, Any]], backend: str
) -> None:
    case = _case(eval_cases, "nickname")
    async with _engine(lab, backend) as engine:
        result = await find_linkedin(case["name"], case["company"], engine=engine)
    assert result.best is not None
    assert result.best.url == case["expected"]
    assert result.best.score >= MATCH_THRESHOLD
    assert result.best.evidence.name_in_title >= 0.9
    assert result.best.evidence.backend == backend
    assert result.matches[0] == result.best
    assert all(m.score >= result.threshold for m in result.matches)
    if result.best.score >= 0.85:
        assert len(result.queries) == 1
    assert result.queries[0].endswith("site:linkedin.com/in")


@pytest.mark.parametrize(
    "tag", ["pub", "unicode_slug", "ascii_input", "nickname_reverse", "credentials", "particle"]
)
async def test_hard_name_and_url_forms(
    lab: SearchLab, eval_cases: dict[str, dict[str, Any]], tag: str
) -> None:
    case = _case(eval_cases, tag)
    async with _engine(lab, "searxng") as engine:
        result = await find_linkedin(
            case["name"],
            case["company"],
            title=case.get("title"),
            location=case.get("location"),
            engine=engine,
        )
    assert result.best is not None, result.candidates
    assert result.best.url == case["expected"]


async def test_person_without_profile_is_an_explicit_no_match(
    lab: SearchLab, eval_cases: dict[str, dict[str, Any]]
) -> None:
    cases = [c for c in eval_cases.values() if c["expected"] is None]
    async with _engine(lab, "duckduckgo") as engine:
        for case in cases[:5]:
            result = await find_linkedin(case["name"], case["company"], engine=engine)
            assert result.best is None
            assert result.matches == ()
            assert result.queries == tuple(query_ladder(case["name"], case["company"]))
            assert all(c.score < result.threshold for c in result.candidates)


async def test_indistinguishable_namesakes_are_not_a_match(
    lab: SearchLab, eval_cases: dict[str, dict[str, Any]]
) -> None:
    case = _case(eval_cases, "twin")
    async with _engine(lab, "brave") as engine:
        result = await find_linkedin(case["name"], case["company"], engine=engine)
    assert result.best is None
    top = result.candidates[:2]
    assert {c.evidence.same_name_hits for c in top} == {2}
    assert all(c.evidence.ambiguity_penalty > 0 for c in top)
    assert case["expected"] in {c.url for c in top}


async def test_limit_and_threshold(lab: SearchLab, eval_cases: dict[str, dict[str, Any]]) -> None:
    case = _case(eval_cases, "plain")
    async with _engine(lab, "searxng") as engine:
        one = await find_linkedin(case["name"], case["company"], engine=engine, limit=1)
        strict = await find_linkedin(case["name"], case["company"], engine=engine, threshold=1.0)
    assert len(one.candidates) == 1
    assert len(one.matches) <= 1
    assert all(m.score == 1.0 for m in strict.matches)


async def test_engine_from_environment_when_none_given(
    search_lab: SearchLab, eval_cases: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in search_lab.env("searxng").items():
        monkeypatch.setenv(key, value)
    case = _case(eval_cases, "plain", 1)
    result = await find_linkedin(case["name"], case["company"])
    assert result.best is not None
    assert result.best.url == case["expected"]


async def test_rate_limit_propagates(lab: SearchLab) -> None:
    lab.fail_next(3, "429")
    async with _engine(lab, "duckduckgo") as engine:
        with pytest.raises(SearchRateLimited):
            await find_linkedin("Jane Doe", "Acme", engine=engine)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "Jane Doe", "company": "Acme", "limit": 0}, SearchQueryError),
        ({"name": "Jane Doe", "company": "Acme", "threshold": 1.5}, SearchQueryError),
        ({"name": "Jane Doe", "company": "Acme", "confident": -0.1}, SearchQueryError),
        ({"name": "Jane Doe", "company": " "}, SearchQueryError),
        ({"name": "Cher", "company": "Acme"}, PersonNameError),
        ({"name": "", "company": "Acme"}, PersonNameError),
    ],
)
async def test_bad_input_fails_before_any_search(
    lab: SearchLab, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    before = len(lab.queries)
    async with _engine(lab, "duckduckgo") as engine:
        with pytest.raises(error):
            await find_linkedin(engine=engine, **kwargs)
    assert len(lab.queries) == before


def test_query_ladder_order_and_contents() -> None:
    ladder = query_ladder('Jane "JD" Doe', "Acme Robotics, Inc.", title="VP Sales", location="Oslo")
    assert ladder == [
        '"Jane JD Doe" "Acme Robotics" site:linkedin.com/in',
        "Jane JD Doe Acme Robotics site:linkedin.com/in",
        '"Jane JD Doe" Acme Robotics VP Sales site:linkedin.com/in',
        '"Jane JD Doe" Acme Robotics Oslo site:linkedin.com/in',
        '"Jane JD Doe" "Acme Robotics" site:linkedin.com/pub',
    ]
    assert len(query_ladder("Jane Doe", "Acme GmbH")) == 3
    assert query_ladder("Jane Doe", "GmbH")[0] == '"Jane Doe" "GmbH" site:linkedin.com/in'


async def test_longest_accepted_fields_still_make_valid_queries(lab: SearchLab) -> None:
    long = "Word " * 50
    place = "Place " * 42
    async with _engine(lab, "searxng") as engine:
        result = await find_linkedin(
            "Jane " + "Doe" * 80, long, title=long, location=place, engine=engine
        )
    assert result.best is None
    assert len(result.queries) == 5
