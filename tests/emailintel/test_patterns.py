"""Template priors, candidate generation and per-domain pattern inference."""

from __future__ import annotations

import math

import pytest
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from emailintel._templates import load_table, parse_template, table
from emailintel.errors import AddressError, ConfigError, PersonNameError
from emailintel.names import parse_name
from emailintel.patterns import (
    Candidate,
    PatternDistribution,
    generate_candidates,
    infer_patterns,
    match_pattern,
    normalize_domain,
    prior_distribution,
    templates,
)

name_words = st.sampled_from(
    [
        "John", "Jane", "Robert", "Jürgen", "Müller", "Søren", "Åsa", "O'Brien", "van", "der",
        "de", "al-Rashid", "Berg-Smith", "Jean-Pierre", "José", "María", "Łukasz", "Zhang",
        "王小明", "Dr.", "Jr.", "PhD", "(Bob)", ",", "-", "Ng", "Li", "Elizabeth", "Wolfeschlegel"
        "steinhausenbergerdorffwelchevoralternwarengewissenhaftschaferswessenschafewarenwohl",
    ]
)  # fmt: skip
names = st.one_of(st.lists(name_words, max_size=6).map(" ".join), st.text(max_size=30))
domains = st.one_of(
    st.sampled_from(["acme.com", "ACME.Com", "münchen.de", "bücher.example", "a.io"]),
    # RFC 5890: "--" in the third and fourth characters is reserved (Punycode's "xn--").
    st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]\.(com|de|co\.uk|io)", fullmatch=True).filter(
        lambda domain: domain[2:4] != "--"
    ),
)
sizes = st.one_of(st.none(), st.integers(min_value=1, max_value=100_000))
ascii_people = st.tuples(
    st.sampled_from(["John", "Jane", "Ann", "Wei", "Olga", "Pedro", "Robert"]),
    st.sampled_from(["", "Quincy", "Marie"]),
    st.sampled_from(["Smith", "Doe", "Lee", "Garcia", "Novak"]),
).map(lambda p: " ".join(w for w in p if w))


def local_of(candidates: list[Candidate], local: str) -> Candidate:
    return next(c for c in candidates if c.local_part == local)


def rank_of(candidates: list[Candidate], local: str) -> int:
    return [c.local_part for c in candidates].index(local)


@settings(max_examples=150, deadline=None)
@given(names, domains, sizes, st.booleans(), st.one_of(st.none(), st.integers(1, 30)))
def test_candidates_are_valid_unique_and_a_distribution(
    name: str, domain: str, size: int | None, nicks: bool, limit: int | None
) -> None:
    try:
        out = generate_candidates(name, domain, company_size=size, nicknames=nicks, limit=limit)
    except PersonNameError:
        return
    assert out
    assert limit is None or len(out) <= limit
    emails = [c.email for c in out]
    assert len(set(emails)) == len(emails)
    assert math.isclose(math.fsum(c.probability for c in out), 1.0, abs_tol=1e-9)
    order = {t: i for i, t in enumerate(templates())}
    keys = [(-c.probability, order[c.pattern], c.email) for c in out]
    assert keys == sorted(keys)
    for c in out:
        assert not any(ch in c.email for ch in "\r\n \t")
        assert len(c.local_part) <= 64
        assert c.email == f"{c.local_part}@{normalize_domain(domain)}"
        assert validate_email(c.email, check_deliverability=False).ascii_email == c.email
        assert c.pattern in templates()
        assert c.probability > 0
    again = generate_candidates(name, domain, company_size=size, nicknames=nicks, limit=limit)
    assert again == out


@settings(max_examples=100, deadline=None)
@given(ascii_people, sizes)
def test_every_candidate_matches_its_own_template(person: str, size: int | None) -> None:
    for c in generate_candidates(person, "acme.com", company_size=size):
        assert c.pattern in match_pattern(c.local_part, person)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(ascii_people, st.integers(0, 40)), max_size=8), sizes)
def test_inference_is_a_distribution(picks: list[tuple[str, int]], size: int | None) -> None:
    known = []
    for person, pick in picks:
        cands = generate_candidates(person, "acme.com", nicknames=False)
        known.append((cands[pick % len(cands)].email, person))
    dist = infer_patterns(known, company_size=size)
    assert isinstance(dist, PatternDistribution)
    shares = [p.percentage for p in dist.patterns]
    assert math.isclose(math.fsum(shares), 100.0, abs_tol=1e-9)
    assert shares == sorted(shares, reverse=True)
    assert sorted(p.pattern for p in dist.patterns) == sorted(templates())
    assert dist.matched == dist.observations == len({e for e, _ in known})


def test_at_least_twenty_templates_and_all_reachable() -> None:
    assert len(templates()) >= 20
    assert len(set(templates())) == len(templates())
    for required in ("{first}.{last}", "{f}{last}", "{first}", "{f}{m}{last}", "{f}{m}{l}"):
        assert required in templates()
    out = generate_candidates("John Quincy Smith", "acme.com", nicknames=False)
    assert {c.pattern for c in out} == set(templates())
    for c in out:
        assert c.variant == "primary"
        assert match_pattern(c.local_part, "John Quincy Smith") == [c.pattern]


def test_equal_probabilities_are_ordered_by_template_then_email() -> None:
    out = generate_candidates("John Smith", "acme.com", nicknames=False)
    prior = {p.pattern: p.percentage for p in prior_distribution().patterns}
    assert prior["{l}{first}"] == prior["{last}-{first}"]
    assert templates().index("{l}{first}") < templates().index("{last}-{first}")
    a, b = local_of(out, "sjohn"), local_of(out, "smith-john")
    assert a.probability == b.probability
    assert rank_of(out, "sjohn") + 1 == rank_of(out, "smith-john")


def test_middle_templates_are_skipped_without_a_middle_name() -> None:
    out = generate_candidates("John Smith", "acme.com", nicknames=False)
    used = {c.pattern for c in out}
    middle = {t for t in templates() if "{m}" in t or "{middle}" in t}
    assert middle
    assert used == set(templates()) - middle
    assert math.isclose(math.fsum(c.probability for c in out), 1.0, abs_tol=1e-9)


def test_a_single_word_name_uses_first_name_templates_only() -> None:
    out = generate_candidates("Madonna", "acme.com")
    assert {c.pattern for c in out} == {"{first}"}
    assert out[0].local_part == "madonna"
    assert [c.pattern for c in generate_candidates(None, "acme.com", last="Smith")] == ["{last}"]


def test_transliterated_names_give_both_spellings() -> None:
    out = generate_candidates("Jürgen Müller", "acme.de")
    locals_ = {c.local_part for c in out}
    assert {"juergen.mueller", "jurgen.muller", "jmueller", "jmuller"} <= locals_
    assert local_of(out, "jmuller").variant == "transliterated"
    assert local_of(out, "jmueller").probability > local_of(out, "jmuller").probability
    soren = {c.local_part for c in generate_candidates("Søren Kierkegaard", "acme.dk")}
    assert {"soren", "soeren", "soren.kierkegaard", "soeren.kierkegaard"} <= soren


def test_apostrophes_particles_and_hyphens_reach_the_addresses() -> None:
    assert "conan.obrien" in {c.local_part for c in generate_candidates("Conan O'Brien", "a.io")}
    beethoven = generate_candidates("Ludwig van Beethoven", "a.io")
    locals_ = {c.local_part for c in beethoven}
    assert {"ludwig.vanbeethoven", "lvanbeethoven", "ludwig.beethoven", "lbeethoven"} <= locals_
    assert local_of(beethoven, "lbeethoven").variant == "particle-dropped"
    hyphen = {c.local_part for c in generate_candidates("Mary Watson-Parker", "a.io")}
    assert {"mary.watson-parker", "mary.watsonparker", "mary.watson", "mary.parker"} <= hyphen


def test_titles_and_suffixes_are_stripped_and_first_last_leads_at_big_companies() -> None:
    out = generate_candidates("Dr. John Smith Jr.", "acme.com", company_size=5000)
    assert out[0].email == "john.smith@acme.com"
    assert out[0].pattern == "{first}.{last}"
    assert out[0].variant == "primary"
    assert not any("dr" in c.local_part.split(".") or "jr" in c.local_part for c in out)


def test_small_companies_favour_the_first_name_alone() -> None:
    small = generate_candidates("John Smith", "acme.com", company_size=10)
    large = generate_candidates("John Smith", "acme.com", company_size=10_000)
    assert local_of(small, "john").probability > local_of(large, "john").probability
    assert rank_of(small, "john") < rank_of(large, "john")
    assert small[0].local_part == "john"


def test_nicknames_rank_below_the_primary() -> None:
    out = generate_candidates("Robert Smith", "acme.com")
    bob = local_of(out, "bob.smith")
    assert bob.variant == "nickname"
    assert bob.probability < local_of(out, "robert.smith").probability
    plain = generate_candidates("Robert Smith", "acme.com", nicknames=False)
    assert "bob.smith" not in {c.local_part for c in plain}


def test_idn_domains_become_ascii_and_case_is_folded() -> None:
    assert normalize_domain("MÜNCHEN.de") == "xn--mnchen-3ya.de"
    out = generate_candidates("Ann Lee", "München.DE", limit=3)
    assert all(c.email.endswith("@xn--mnchen-3ya.de") for c in out)
    assert generate_candidates("Ann Lee", " acme.com ", limit=1)[0].email.endswith("@acme.com")


@pytest.mark.parametrize(
    "domain",
    [
        "",
        "  ",
        "acme",
        "ac me.com",
        "-acme.com",
        "acme.com\r\nRCPT TO:<x@y.z>",
        "a@b.com",
        "acme..com",
    ],
)
def test_bad_domains_raise_address_error(domain: str) -> None:
    with pytest.raises(AddressError):
        generate_candidates("John Smith", domain)


@pytest.mark.parametrize("name", ["", "Dr.", "  ", "Jr., PhD"])
def test_unusable_names_raise(name: str) -> None:
    with pytest.raises(PersonNameError):
        generate_candidates(name, "acme.com")


@pytest.mark.parametrize("limit", [0, -1, True])
def test_bad_limit_raises(limit: int) -> None:
    with pytest.raises(ConfigError):
        generate_candidates("John Smith", "acme.com", limit=limit)


@pytest.mark.parametrize("size", [0, -5, True])
def test_bad_company_size_raises(size: int) -> None:
    with pytest.raises(ConfigError):
        generate_candidates("John Smith", "acme.com", company_size=size)
    with pytest.raises(ConfigError):
        prior_distribution(size)


def test_limit_keeps_the_top_and_renormalises() -> None:
    full = generate_candidates("John Smith", "acme.com")
    top = generate_candidates("John Smith", "acme.com", limit=5)
    assert [c.email for c in top] == [c.email for c in full[:5]]
    assert math.isclose(math.fsum(c.probability for c in top), 1.0, abs_tol=1e-9)
    assert top[0].probability > full[0].probability


def test_overlong_local_parts_are_dropped() -> None:
    long_last = "x" * 60
    out = generate_candidates(None, "acme.com", first="Johnathan", last=long_last, nicknames=False)
    assert out
    assert all(len(c.local_part) <= 64 for c in out)
    assert f"j{long_last}" in {c.local_part for c in out}
    assert f"johnathan.{long_last}" not in {c.local_part for c in out}


def test_duplicates_pool_their_probability() -> None:
    # "Li Li": {first} and {last} give the same address and must be one candidate
    out = generate_candidates("Li Li", "acme.com", nicknames=False, company_size=10)
    li = local_of(out, "li")
    assert [c.local_part for c in out].count("li") == 1
    prior = dict(
        p for p in ((s.pattern, s.percentage / 100) for s in prior_distribution(10).patterns)
    )
    usable = [t for t in templates() if "{m}" not in t and "{middle}" not in t]
    total = math.fsum(prior[t] for t in usable)
    assert math.isclose(li.probability, (prior["{first}"] + prior["{last}"]) / total)
    assert li.pattern == "{first}"


def test_prior_distribution_follows_the_data() -> None:
    overall = prior_distribution()
    assert overall.observations == overall.matched == 0
    assert overall.patterns[0].pattern == "{first}.{last}"
    assert math.isclose(math.fsum(p.percentage for p in overall.patterns), 100.0)
    small = {p.pattern: p.percentage for p in prior_distribution(10).patterns}
    assert max(small, key=lambda t: small[t]) == "{first}"
    mid = {p.pattern: p.percentage for p in prior_distribution(150).patterns}
    assert max(mid, key=lambda t: mid[t]) == "{f}{last}"


def test_one_known_address_moves_the_ranking() -> None:
    known = [("jsmith@acme.com", "John Smith")]
    dist = infer_patterns(known, company_size=5000)
    assert dist.patterns[0].pattern == "{f}{last}"
    assert (dist.observations, dist.matched) == (1, 1)
    before = generate_candidates("Jane Doe", "acme.com", company_size=5000)
    assert before[0].local_part == "jane.doe"
    after = generate_candidates("Jane Doe", "acme.com", company_size=5000, known=known)
    assert after[0].local_part == "jdoe"
    assert after[0].pattern == "{f}{last}"
    assert local_of(after, "jdoe").probability > local_of(before, "jdoe").probability


def test_five_known_addresses_make_the_pattern_near_certain() -> None:
    people = ["John Smith", "Ann Lee", "Pedro Garcia", "Olga Novak", "Wei Zhang"]
    known = [(f"{p.split()[0][0]}{p.split()[1]}@acme.com".lower(), p) for p in people]
    dist = infer_patterns(known, domain="ACME.com", company_size=5000)
    assert dist.patterns[0].pattern == "{f}{last}"
    assert dist.patterns[0].percentage > 90
    out = generate_candidates("Jane Doe", "acme.com", known=known, nicknames=False)
    assert out[0].local_part == "jdoe"
    assert out[0].probability > 0.9


def test_known_addresses_elsewhere_are_ignored() -> None:
    known = [("jsmith@other.com", "John Smith"), ("ann.lee@acme.com", "Ann Lee")]
    dist = infer_patterns(known, domain="acme.com")
    assert (dist.observations, dist.matched) == (1, 1)
    assert dist.patterns[0].pattern == "{first}.{last}"
    only_other = generate_candidates("Jane Doe", "acme.com", known=known[:1])
    assert only_other == generate_candidates("Jane Doe", "acme.com")


def test_unmatched_and_duplicate_known_addresses_count_as_observations_only() -> None:
    known = [
        ("sales@acme.com", "John Smith"),
        ("JSmith@ACME.com", "John Smith"),
        ("jsmith@acme.com", "John Smith"),
    ]
    dist = infer_patterns(known)
    assert (dist.observations, dist.matched) == (2, 1)


def test_ambiguous_matches_split_their_count() -> None:
    dist = infer_patterns([("madonna@acme.com", "Madonna")])
    shares = {p.pattern: p.percentage for p in dist.patterns}
    prior = {p.pattern: p.percentage for p in prior_distribution().patterns}
    assert shares["{first}"] > prior["{first}"]
    assert shares["{last}"] > prior["{last}"]
    assert shares["{first}"] / shares["{last}"] == pytest.approx(prior["{first}"] / prior["{last}"])


def test_match_pattern_handles_tags_numbers_and_case() -> None:
    assert match_pattern("JSmith", "John Smith") == ["{f}{last}"]
    assert match_pattern("john.smith+news", "John Smith") == ["{first}.{last}"]
    assert match_pattern("john.smith2", "John Smith") == ["{first}.{last}"]
    assert match_pattern("bob.smith", "Robert Smith") == ["{first}.{last}"]
    assert match_pattern("zzz", "John Smith") == []
    assert match_pattern("123", "John Smith") == []
    assert match_pattern("madonna", parse_name("Madonna")) == ["{first}", "{last}"]
    assert set(match_pattern("js", "John Smith")) == {"{f}{l}"}


def test_bad_known_input_raises() -> None:
    with pytest.raises(AddressError):
        infer_patterns([("not-an-address", "John Smith")])
    with pytest.raises(PersonNameError):
        infer_patterns([("jsmith@acme.com", "Dr.")])
    with pytest.raises(AddressError):
        infer_patterns([], domain="acme")
    with pytest.raises(AddressError):
        generate_candidates("Jane Doe", "acme.com", known=[("x@", "John Smith")])


def test_packaged_table_is_consistent() -> None:
    tab = table()
    assert math.isclose(math.fsum(tab.overall), 1.0)
    assert [b.name for b in tab.buckets] == ["1-50", "51-200", "201-500", "500+"]
    for bucket in tab.buckets:
        assert math.isclose(math.fsum(bucket.weights), 1.0)
        assert all(w > 0 for w in bucket.weights)
    assert 0 < tab.concentration < 1
    assert tab.priors(50) == tab.buckets[0].weights
    assert tab.priors(51) == tab.buckets[1].weights
    assert tab.priors(10**9) == tab.buckets[3].weights


def test_parse_template() -> None:
    t = parse_template("{first}.{m}.{last}", 3)
    assert t.parts == ((True, "first"), (False, "."), (True, "m"), (False, "."), (True, "last"))
    assert t.needs == {"first", "middle", "last"}
    assert t.index == 3


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "first.last",
        "{first}+{last}",
        "{nick}",
        ".{first}",
        "{first}.",
        "{first}..{last}",
        "{First}",
    ],
)
def test_bad_templates_raise(pattern: str) -> None:
    with pytest.raises(ConfigError):
        parse_template(pattern)


GOOD = """
[inference]
concentration = 1.0
[[bucket]]
name = "small"
min = 1
max = 10
[[template]]
pattern = "{first}"
overall = 30
by_size = { small = 80 }
[[template]]
pattern = "{last}"
overall = 10
[[template]]
pattern = "{f}{last}"
overall = 60
"""


def test_load_table_fills_bucket_gaps_in_proportion() -> None:
    tab = load_table(GOOD)
    assert tab.overall == pytest.approx((0.3, 0.1, 0.6))
    assert tab.priors(5) == pytest.approx((0.8, 0.2 * 10 / 70, 0.2 * 60 / 70))
    assert tab.priors(11) == tab.overall


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("concentration = 1.0", "concentration = 1.0 ="),
        ("concentration = 1.0", "concentration = 0"),
        ("concentration = 1.0", "concentration = 'x'"),
        ("concentration = 1.0", "concentration = true"),
        ("[inference]\nconcentration = 1.0", ""),
        ('pattern = "{last}"', 'pattern = "{first}"'),
        ('pattern = "{last}"', 'pattern = "{surname}"'),
        ("overall = 10", "overall = -1"),
        ("overall = 10", "overall = inf"),
        ("overall = 10", ""),
        ("small = 80", "large = 80"),
        ("small = 80", "small = 100"),
        ("max = 10", "max = 0"),
        ("min = 1", 'min = "1"'),
        ("by_size = { small = 80 }", "by_size = 3"),
    ],
)
def test_bad_tables_raise(old: str, new: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError):
        load_table(GOOD.replace(old, new))


def test_a_table_without_templates_raises() -> None:
    with pytest.raises(ConfigError):
        load_table("template = []\n[inference]\nconcentration = 1.0\n")
