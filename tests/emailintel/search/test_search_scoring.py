"""Candidate scoring: name, nickname, slug, company suffixes, ambiguity, decoys, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.errors import PersonNameError, SearchQueryError
from emailintel.search.models import SearchHit
from emailintel.search.scoring import (
    company_match,
    company_tokens,
    make_target,
    name_in_title,
    rank_hits,
    slug_similarity,
)


def _hit(url: str, title: str, snippet: str = "", rank: int = 0) -> tuple[SearchHit, str]:
    return SearchHit(url=url, title=title, snippet=snippet, rank=rank, backend="lab"), "q"


def test_nickname_in_title_counts_either_way() -> None:
    formal = make_target("Robert Smith", "Acme")
    assert name_in_title(formal, "Bob Smith - Engineer - Acme | LinkedIn") >= 0.9
    nick = make_target("Chris Parker", "Acme")
    assert name_in_title(nick, "Christopher Parker - Acme | LinkedIn") >= 0.9
    assert name_in_title(formal, "Robert Smith - Acme | LinkedIn") == 1.0


def test_other_given_name_with_same_surname_scores_low() -> None:
    target = make_target("Sören Krüger", "Acme")
    same = name_in_title(target, "Sören Krüger - Acme | LinkedIn")
    other = name_in_title(target, "Jessica Krüger - Acme | LinkedIn")
    assert same == 1.0
    assert other < 0.3


def test_transliteration_and_honorifics_in_title() -> None:
    target = make_target("Joerg Mueller", "Acme")
    assert name_in_title(target, "Dr. Jörg Müller, PhD - Acme | LinkedIn") == 1.0
    accented = make_target("José García López", "Acme")
    assert name_in_title(accented, "Jose Garcia Lopez – CFO – Acme") == 1.0


def test_initial_in_title_is_partial_credit() -> None:
    target = make_target("James Carter", "Acme")
    assert 0.5 < name_in_title(target, "J. Carter - Acme | LinkedIn") < 1.0


def test_slug_ignores_numeric_and_hex_suffixes() -> None:
    target = make_target("Jane Doe", "Acme")
    assert slug_similarity(target, "jane-doe-1a2b3c4d") == 1.0
    assert slug_similarity(target, "janedoe") == 1.0
    assert slug_similarity(target, "janedoe-bafcde") == 1.0
    assert slug_similarity(target, "jdoe") >= 0.75
    assert slug_similarity(target, "growthnerd42") == 0.0
    assert slug_similarity(target, "12345") == 0.0


def test_slug_with_particles_and_diacritics() -> None:
    target = make_target("Jan van der Berg", "Acme")
    assert slug_similarity(target, "jan-van-der-berg") == 1.0
    assert slug_similarity(target, "janvanderberg-77") == 1.0
    umlaut = make_target("Jörg Müller", "Acme")
    assert slug_similarity(umlaut, "jörg-müller-8a7b6c") == 1.0
    assert slug_similarity(umlaut, "joerg-mueller") == 1.0


def test_company_legal_suffixes_are_stripped() -> None:
    assert company_tokens("Acme Robotics, Inc.") == ("acme", "robotics")
    assert company_tokens("Northwind Logistics GmbH") == ("northwind", "logistics")
    assert company_tokens("Zhongshan Smart Devices Co., Ltd.") == ("zhongshan", "smart", "devices")
    assert company_tokens("The Orbital Dynamics B.V.") == ("orbital", "dynamics")
    assert company_tokens("Lumen & Lark") == ("lumen", "and", "lark")
    assert company_tokens("GmbH") == ("gmbh",)
    target = make_target("Jane Doe", "Acme Robotics, Inc.")
    assert company_match(target, "Jane Doe - CTO - Acme Robotics LLC | LinkedIn", "") == 1.0
    assert company_match(target, "Jane Doe - CTO | LinkedIn", "Experience: Acme Robotics") == 1.0


def test_company_near_spellings_and_lookalikes() -> None:
    target = make_target("Jane Doe", "Müller Bau AG")
    assert company_match(target, "Jane Doe - Mueller Bau | LinkedIn", "") >= 0.85
    acme = make_target("Jane Doe", "Acme Robotics")
    assert company_match(acme, "Jane Doe - Acme Analytics | LinkedIn", "") == 0.0
    assert 0.0 < company_match(acme, "Jane Doe - Acme Robotics Europe Sales | LinkedIn", "") < 1.0


def test_school_in_education_is_not_the_employer() -> None:
    target = make_target("Jane Doe", "Pinecrest University")
    snippet = "Experience: Acme · Education: Pinecrest University · Location: Oslo"
    assert company_match(target, "Jane Doe - Acme | LinkedIn", snippet) == 0.0


def test_decoy_at_another_company_ranks_lower() -> None:
    target = make_target("Robert Smith", "Acme Robotics, Inc.")
    ranked = rank_hits(
        target,
        [
            _hit(
                "https://www.linkedin.com/in/robertsmith",
                "Robert Smith - Zenith Foods | LinkedIn",
                rank=0,
            ),
            _hit(
                "https://uk.linkedin.com/in/bob-smith-1a2b3c?trk=x",
                "Bob Smith - Acme Robotics | LinkedIn",
                rank=1,
            ),
            _hit(
                "https://www.linkedin.com/company/acme-robotics", "Acme Robotics | LinkedIn", rank=2
            ),
        ],
    )
    assert [c.url for c in ranked] == [
        "https://www.linkedin.com/in/bob-smith-1a2b3c",
        "https://www.linkedin.com/in/robertsmith",
    ]
    best, decoy = ranked
    assert best.score > 0.85 > 0.6 > decoy.score
    assert best.evidence.company_match == 1.0
    assert best.evidence.ambiguity_penalty == 0.0
    assert decoy.evidence.company_match == 0.0
    assert best.evidence.backend == "lab"
    assert best.evidence.query == "q"


def test_ambiguity_penalty_for_indistinguishable_namesakes() -> None:
    target = make_target("Mei Liu", "Northwind")
    one = _hit("https://www.linkedin.com/in/mei-liu-1", "Mei Liu - Northwind | LinkedIn")
    two = _hit("https://www.linkedin.com/in/mei-liu-2", "Mei Liu - Analyst - Northwind | LinkedIn")
    alone = rank_hits(target, [one])
    both = rank_hits(target, [one, two])
    assert alone[0].evidence.ambiguity_penalty == 0.0
    assert alone[0].evidence.same_name_hits == 1
    assert all(c.evidence.ambiguity_penalty > 0 for c in both)
    assert all(c.evidence.same_name_hits == 2 for c in both)
    assert max(c.score for c in both) < alone[0].score
    assert max(c.score for c in both) < 0.6


def test_namesakes_elsewhere_do_not_penalise_the_company_match() -> None:
    target = make_target("Mei Liu", "Northwind")
    ranked = rank_hits(
        target,
        [
            _hit("https://www.linkedin.com/in/mei-liu-1", "Mei Liu - Northwind | LinkedIn"),
            _hit("https://www.linkedin.com/in/mei-liu-2", "Mei Liu - Saffron Labs | LinkedIn"),
            _hit("https://www.linkedin.com/in/mei-liu-3", "Mei Liu - Cobalt | LinkedIn"),
        ],
    )
    assert ranked[0].url.endswith("mei-liu-1")
    assert ranked[0].evidence.ambiguity_penalty == 0.0
    assert ranked[1].evidence.ambiguity_penalty > 0.0


def test_same_profile_through_two_urls_is_one_candidate() -> None:
    target = make_target("Jane Doe", "Acme")
    ranked = rank_hits(
        target,
        [
            _hit("https://de.linkedin.com/in/jane-doe/", "Jane Doe - Acme | LinkedIn"),
            _hit("https://www.linkedin.com/in/Jane-Doe?trk=a", "Jane Doe | LinkedIn"),
        ],
    )
    assert len(ranked) == 1
    assert ranked[0].evidence.company_match == 1.0


def test_optional_title_and_location() -> None:
    target = make_target("Jane Doe", "Acme", title="VP of Sales", location="Oslo")
    hit = _hit(
        "https://www.linkedin.com/in/jane-doe",
        "Jane Doe - VP Sales - Acme | LinkedIn",
        "Location: Oslo, Norway",
    )
    ev = rank_hits(target, [hit])[0].evidence
    assert ev.title_match == 1.0
    assert ev.location_match == 1.0
    elsewhere = _hit(
        "https://www.linkedin.com/in/jane-doe",
        "Jane Doe - Engineer - Acme | LinkedIn",
        "Location: Lagos",
    )
    ev2 = rank_hits(target, [elsewhere])[0].evidence
    assert ev2.title_match == 0.0
    assert ev2.location_match == 0.0
    assert rank_hits(make_target("Jane Doe", "Acme"), [hit])[0].evidence.title_match is None


def test_bad_requests_raise_typed_errors() -> None:
    with pytest.raises(SearchQueryError):
        make_target("Jane Doe", "   ")
    with pytest.raises(SearchQueryError):
        make_target("Jane Doe", "--,.")
    with pytest.raises(SearchQueryError):
        make_target("Jane Doe", "Acme", title="x" * 300)
    with pytest.raises(PersonNameError):
        make_target("Madonna", "Acme")
    with pytest.raises(PersonNameError):
        make_target("1234 !!", "Acme")


_words = st.text(alphabet="abcdeéijklmnoprstuüz -|·", min_size=0, max_size=40)


@given(st.lists(st.tuples(_words, _words, _words), max_size=8))
def test_ranked_scores_are_bounded_sorted_and_unique(rows: list[tuple[str, str, str]]) -> None:
    target = make_target("Jane Doe", "Acme Robotics")
    hits = [
        _hit(f"https://www.linkedin.com/in/{slug.strip(' -|·') or 'x'}", title, snippet, rank=i)
        for i, (slug, title, snippet) in enumerate(rows)
    ]
    ranked = rank_hits(target, hits)
    scores = [c.score for c in ranked]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert len({c.url for c in ranked}) == len(ranked)
    assert rank_hits(target, hits) == ranked
