"""Name splitting, transliteration and variant weighting for address guessing."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailintel.errors import PersonNameError
from emailintel.names import (
    MAX_NAME_CHARS,
    PARTICLES,
    SUFFIXES,
    TITLES,
    NameVariant,
    PersonName,
    nicknames_for,
    parse_name,
    split_name,
    word_variants,
)

FRAGMENT = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")

name_words = st.sampled_from(
    [
        "John", "Jürgen", "Müller", "Søren", "Åsa", "Ærø", "Straße", "O'Brien", "D’Angelo",
        "van", "der", "de", "la", "al-Rashid", "bin", "Berg-Smith", "Jean-Pierre", "José",
        "María", "Łukasz", "Zhang", "王小明", "Ivanova", "Dr.", "Jr.", "PhD", "III", "Mrs",
        "(Bob)", '"Liz"', "'Jim'", ",", "-", "...", "😀", "Ng", "Li",
    ]
)  # fmt: skip
free_names = st.one_of(
    st.lists(name_words, min_size=0, max_size=7).map(" ".join),
    st.text(max_size=40),
)


def texts(variants: tuple[NameVariant, ...]) -> list[str]:
    return [v.text for v in variants]


def check_slot(variants: tuple[NameVariant, ...]) -> None:
    assert all(FRAGMENT.fullmatch(v.text) for v in variants), variants
    assert len(set(texts(variants))) == len(variants)
    if variants:
        assert math.isclose(sum(v.weight for v in variants), 1.0, abs_tol=1e-9)
        weights = [v.weight for v in variants]
        assert weights == sorted(weights, reverse=True)
        assert all(w > 0 for w in weights)


@settings(max_examples=300, deadline=None)
@given(free_names)
def test_any_text_gives_clean_weighted_slots_or_a_name_error(text: str) -> None:
    try:
        person = parse_name(text)
    except PersonNameError:
        return
    assert person.first or person.last
    for slot in ("first", "middle", "last", "f", "m", "l"):
        check_slot(person.slot(slot))
    for slot in ("f", "m", "l"):
        assert all(len(v.text) == 1 for v in person.slot(slot))


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(st.none(), free_names),
    st.one_of(st.none(), free_names),
    st.one_of(st.none(), free_names),
)
def test_explicit_parts_give_clean_slots(
    first: str | None, middle: str | None, last: str | None
) -> None:
    try:
        person = parse_name(None, first=first, middle=middle, last=last)
    except PersonNameError:
        # explicit parts strip less than full-name parsing, so the full parse must fail too
        for part in (first, last):
            if part is not None:
                with pytest.raises(PersonNameError):
                    parse_name(part)
        return
    for slot in ("first", "middle", "last"):
        check_slot(person.slot(slot))


def test_full_name_with_titles_suffixes_particles_and_hyphen() -> None:
    parts = split_name("Dr. José María van der Berg-Smith Jr., PhD")
    assert parts.first == "José"
    assert parts.middle == ("María",)
    assert parts.last == "van der Berg-Smith"
    person = parse_name("Dr. José María van der Berg-Smith Jr., PhD")
    assert texts(person.first)[0] == "jose"
    assert texts(person.middle) == ["maria"]
    last = texts(person.last)
    assert last[0] == "vanderberg-smith"
    for expected in ("vanderbergsmith", "berg-smith", "bergsmith", "vanderberg", "berg", "smith"):
        assert expected in last
    # a particle belongs to the first word of the compound, never glued to the last one
    assert "vandersmith" not in last


@pytest.mark.parametrize(
    ("name", "slot", "primary", "alternative"),
    [
        ("Jürgen Müller", "last", "mueller", "muller"),
        ("Jürgen Müller", "first", "juergen", "jurgen"),
        ("Søren Kierkegaard", "first", "soren", "soeren"),
        ("Åsa Larsson", "first", "aasa", "asa"),
        ("Björk Guðmundsdóttir", "first", "bjoerk", "bjork"),
        ("Jörg Bär", "last", "baer", "bar"),
    ],
)
def test_locale_transliterations_give_both_spellings(
    name: str, slot: str, primary: str, alternative: str
) -> None:
    variants = parse_name(name, nicknames=False).slot(slot)
    assert texts(variants)[:2] == [primary, alternative]
    assert variants[0].kind == "primary"
    assert variants[1].kind == "transliterated"
    assert variants[0].weight > variants[1].weight


@pytest.mark.parametrize(
    ("word", "expected"),
    [("Straße", "strasse"), ("Ærø", "aero"), ("Łukasz", "lukasz"), ("王小明", "wangxiaoming")],
)
def test_single_spelling_transliterations(word: str, expected: str) -> None:
    assert texts(word_variants(word))[0] == expected


def test_apostrophes_are_dropped() -> None:
    assert texts(parse_name("Conan O'Brien").last) == ["obrien"]
    assert texts(parse_name("Anna D’Angelo").last) == ["dangelo"]


def test_particles_are_tried_with_and_without() -> None:
    last = parse_name("Ludwig van Beethoven").last
    assert texts(last) == ["vanbeethoven", "beethoven"]
    assert last[1].kind == "particle-dropped"
    assert texts(parse_name("Jan van der Berg").last) == ["vanderberg", "berg"]
    assert texts(parse_name("Omar al-Rashid").last) == ["alrashid", "rashid", "al-rashid"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Rosa de la Cruz", ["delacruz", "cruz"]),
        ("Ursula von der Leyen", ["vonderleyen", "leyen"]),
        ("Ahmad bin Abdullah", ["binabdullah", "abdullah"]),
        ("Leonardo da Vinci", ["davinci", "vinci"]),
        ("Ana dos Santos", ["dossantos", "santos"]),
        ("Ann Le Bon", ["lebon", "bon"]),
    ],
)
def test_common_particles(name: str, expected: list[str]) -> None:
    assert texts(parse_name(name).last) == expected


def test_a_name_that_starts_with_a_particle_word_keeps_it_as_first_name() -> None:
    person = parse_name("Van Morrison", nicknames=False)
    assert texts(person.first) == ["van"]
    assert texts(person.last) == ["morrison"]


def test_hyphenated_names_give_all_four_forms() -> None:
    last = parse_name("Mary Watson-Parker").last
    assert texts(last) == ["watson-parker", "watsonparker", "watson", "parker"]
    assert [v.kind for v in last] == ["primary", "hyphen-dropped", "first-part", "last-part"]
    first = parse_name("Jean-Pierre Rampal").first
    assert texts(first) == ["jean-pierre", "jeanpierre", "jean", "pierre"]


def test_last_first_with_comma() -> None:
    parts = split_name("van der Berg, Jan")
    assert (parts.first, parts.last) == ("Jan", "van der Berg")
    assert split_name("Smith, John, Jr.").first == "John"


def test_initials_follow_the_variants() -> None:
    person = parse_name("Ludwig van Beethoven")
    assert texts(person.l) == ["v", "b"]
    assert texts(person.f) == ["l"]
    assert person.m == ()


def test_nicknames_have_a_lower_weight_than_the_primary() -> None:
    assert "bob" in nicknames_for("robert")
    first = parse_name("Robert Smith").first
    weights = {v.text: v.weight for v in first}
    assert first[0].text == "robert"
    assert "bob" in weights
    assert weights["bob"] < weights["robert"]
    assert {v.kind for v in first[1:]} == {"nickname"}
    assert texts(parse_name("Robert Smith", nicknames=False).first) == ["robert"]


def test_a_written_nickname_counts_more_than_a_dictionary_one() -> None:
    for text in ('Robert "Bob" Smith', "Robert (Bob) Smith", "Robert 'Bob' Smith"):
        parts = split_name(text)
        assert parts.nicknames == ("Bob",)
        assert (parts.first, parts.last) == ("Robert", "Smith")
        first = parse_name(text).first
        assert texts(first)[:2] == ["robert", "bob"]


def test_explicit_parts_override_the_parsed_name() -> None:
    person = parse_name("John Smith", last="Doe", middle="Quincy Adams", nicknames=False)
    assert texts(person.first) == ["john"]
    assert texts(person.middle) == ["quincy"]
    assert texts(person.last) == ["doe"]
    only_parts = parse_name(None, first="Dr. Ann", last="Lee PhD")
    assert texts(only_parts.first)[0] == "ann"
    assert texts(only_parts.last) == ["lee"]


def test_a_single_word_is_a_first_name_and_swaps_to_a_surname() -> None:
    person = parse_name("Madonna")
    assert texts(person.first) == ["madonna"]
    assert person.last == ()
    assert isinstance(person.swapped(), PersonName)
    assert texts(person.swapped().last) == ["madonna"]


def test_unknown_slot_is_refused() -> None:
    with pytest.raises(KeyError):
        parse_name("John Smith").slot("nickname")


def test_word_lists_are_lower_case_keys() -> None:
    for words in (TITLES, SUFFIXES, PARTICLES):
        assert all(w == w.lower() and w.isalnum() for w in words)
    assert {"dr", "prof", "mr", "mrs", "ms"} <= TITLES
    assert {"jr", "sr", "ii", "iii", "iv", "phd", "md", "mba", "esq"} <= SUFFIXES


@pytest.mark.parametrize(
    "text", ["", "   ", "Dr.", "Dr. Prof.", "Jr., PhD", "...", "--", "😀 🎉", "123 456", "Mr. III"]
)
def test_nothing_usable_raises(text: str) -> None:
    with pytest.raises(PersonNameError):
        parse_name(text)


def test_no_name_at_all_raises() -> None:
    with pytest.raises(PersonNameError):
        parse_name(None)
    with pytest.raises(PersonNameError):
        parse_name(None, first="Dr.", last="PhD")


def test_a_bad_full_name_is_ignored_when_parts_are_given() -> None:
    assert texts(parse_name("Dr.", first="Ann", nicknames=False).first) == ["ann"]


def test_overlong_input_raises() -> None:
    with pytest.raises(PersonNameError):
        parse_name("a" * (MAX_NAME_CHARS + 1))
    with pytest.raises(PersonNameError):
        parse_name(None, first="a" * (MAX_NAME_CHARS + 1))
