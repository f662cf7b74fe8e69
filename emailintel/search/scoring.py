"""Score search hits as the LinkedIn profile of a given person at a given company.

Pure. Signals (each 0-1): slug similarity to the name's spellings, the name in the result title
(nicknames count), the company in the title/snippet with legal suffixes stripped, and optional
job-title and location overlap. Several same-name profiles that the company cannot tell apart
cost an ambiguity penalty. Names go through :mod:`emailintel.names`, so transliteration,
particles, hyphenated surnames and nicknames follow the same rules as the address finder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from anyascii import anyascii
from rapidfuzz import fuzz

from emailintel.errors import PersonNameError, ProfileUrlError, SearchQueryError
from emailintel.names import NameVariant, nicknames_for, parse_name, word_variants
from emailintel.search.models import CandidateEvidence, LinkedInCandidate, SearchHit
from emailintel.search.urls import normalize_profile_url, profile_slug

__all__ = [
    "DEFAULT_WEIGHTS",
    "LEGAL_SUFFIXES",
    "Signals",
    "Target",
    "Weights",
    "company_match",
    "company_tokens",
    "make_target",
    "name_in_title",
    "rank_hits",
    "signals",
    "slug_similarity",
]

MAX_FIELD_CHARS = 256


def _wordset(words: str) -> frozenset[str]:
    """Frozen set of the space-separated words."""
    return frozenset(words.split())


LEGAL_SUFFIXES = _wordset(
    "inc incorporated llc llp lp ltd limited plc corp corporation co company gmbh ag sa sas sasu "
    "sarl sl slu srl spa bv nv oy oyj ab asa as aps kg kgaa ug se pty pte pvt bhd sdn kk "
    "holding holdings group"
)
"""Company-name words that do not identify the company (compared after folding, dots dropped)."""

_STOPWORDS = _wordset("the of and at in for to a an de der la le")
_TOKEN = re.compile(r"[a-z0-9]+")
_NAME_SEPARATORS = re.compile(r"\s+[-–—|·:]\s+|\s*\|\s*|,")
_SEGMENT_SEPARATORS = re.compile(r"\s[-–—]\s|[|·•;:,()\n]|\s(?:at|@|bei|chez|en)\s|@")
_PROFILE_NOISE = re.compile(r"\blinkedin\b", re.IGNORECASE)
_HAS_DIGIT = re.compile(r"\d")
_HEX_WORD = re.compile(r"^[a-f]{6,}$")
_PARTIAL_KINDS = ("first-part", "last-part")
_HONORIFICS = _wordset("dr prof mr mrs ms mx sir dame")
_EDUCATION = re.compile(
    r"\b(?:Education|Ausbildung|Formation|Educación)\s*:[^·|\n]*", re.IGNORECASE
)


def _key(word: str) -> str:
    """A word folded for set lookups."""
    return "".join(_fold(word))


@dataclass(frozen=True, slots=True)
class Weights:
    """How the signals combine; tuned by hand on the evaluation set's error lists (see the report
    printed by ``python -m benchmarks.linkedin_eval``).

    score = name * (company_floor + (1 - company_floor) * evidence) * (1 - penalty), where name
    blends the title and slug signals and evidence blends the company with optional extras.
    """

    title_name: float = 0.8
    slug: float = 0.2
    slug_only: float = 0.6
    company_floor: float = 0.45
    optional: float = 0.15
    ambiguity_step: float = 0.45
    ambiguity_cap: float = 0.7
    same_name: float = 0.9
    indistinct_company: float = 0.15


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True, slots=True)
class Target:
    """The person searched for, folded once: name spellings with credit, company and extras."""

    first: tuple[tuple[str, float], ...]
    last: tuple[tuple[str, float], ...]
    company: tuple[str, ...]
    first_formal: tuple[str, ...]
    title: tuple[str, ...]
    location: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Signals:
    """The raw signals of one hit, before the ambiguity penalty."""

    slug_similarity: float
    name_in_title: float
    company_match: float
    title_match: float | None
    location_match: float | None


@lru_cache(maxsize=16384)
def _fold(text: str) -> tuple[str, ...]:
    """Lower-case ASCII tokens of free text (cached: titles and names repeat across queries)."""
    return tuple(_TOKEN.findall(anyascii(text.replace("&", " and ")).lower()))


def company_tokens(company: str) -> tuple[str, ...]:
    """Company tokens with legal suffixes and a leading "the" removed ("Acme, Inc." -> acme)."""
    tokens = _fold(company.replace(".", ""))
    core = list(tokens)
    while core and core[-1] in LEGAL_SUFFIXES:
        core.pop()
    if core and core[0] == "the":
        core.pop(0)
    return tuple(core) if core else tuple(tokens)


def _credits(variants: Iterable[NameVariant], *, nickname_credit: float) -> dict[str, float]:
    """Spelling -> credit (1 for full forms, less for nicknames and one part of a compound)."""
    out: dict[str, float] = {}
    for v in variants:
        text = v.text.replace("-", "")
        if "nickname" in v.kind:
            credit = nickname_credit
        elif any(k in v.kind for k in _PARTIAL_KINDS):
            credit = 0.85
        else:
            credit = 1.0
        out[text] = max(out.get(text, 0.0), credit)
    return out


def _check(field: str, value: str | None) -> None:
    """Refuse overlong free-text fields."""
    if value is not None and len(value) > MAX_FIELD_CHARS:
        raise SearchQueryError(f"{field} longer than {MAX_FIELD_CHARS} characters")


def make_target(
    name: str, company: str, *, title: str | None = None, location: str | None = None
) -> Target:
    """Fold the search request once; bad names raise PersonNameError, a blank company SearchQueryError."""
    for field, value in (("company", company), ("title", title), ("location", location)):
        _check(field, value)
    company_part = company_tokens(company)
    if not company_part:
        raise SearchQueryError("company is empty")
    person = parse_name(name)
    first = _credits(person.first, nickname_credit=0.9)
    last = _credits(person.last, nickname_credit=0.9)
    if not last:
        raise PersonNameError(f"need a first and last name, got {name!r}")

    def extra(text: str | None) -> tuple[str, ...]:
        return tuple(t for t in _fold(text or "") if t not in _STOPWORDS)

    return Target(
        first=tuple(sorted(first.items())),
        last=tuple(sorted(last.items())),
        company=company_part,
        first_formal=tuple(
            v.text.replace("-", "") for v in person.first if "nickname" not in v.kind
        ),
        title=extra(title),
        location=extra(location),
    )


def _token_forms(tokens: Sequence[str]) -> set[str]:
    """ASCII spellings of words and of adjacent pairs/triples glued (van der berg -> vanderberg)."""
    forms: set[str] = set()
    for word in tokens:
        forms.update(v.text.replace("-", "") for v in word_variants(word))
    folded = [t for w in tokens for t in _fold(w)]
    for size in (2, 3):
        for i in range(len(folded) - size + 1):
            forms.add("".join(folded[i : i + size]))
    forms.update(folded)
    return forms


def _best(spellings: tuple[tuple[str, float], ...], forms: set[str]) -> float:
    """Highest credit among spellings present in the forms."""
    return max((credit for text, credit in spellings if text in forms), default=0.0)


def _first_in(target: Target, words: Sequence[str], forms: set[str]) -> float:
    """Credit for the given name among the words: spelling, nickname either way, or initial."""
    found = _best(target.first, forms)
    if found:
        return found
    for word in words[:2]:
        for token in _fold(word):
            if len(token) > 1 and set(nicknames_for(token)) & set(target.first_formal):
                return 0.9
    initials = {t for w in words for t in _fold(w) if len(t) == 1}
    return 0.5 if any(text[0] in initials for text, _ in target.first) else 0.0


def name_in_title(target: Target, title: str) -> float:
    """How well the name part of a result title ("Bob Smith - CTO - Acme | LinkedIn") fits.

    A surname under a different given name scores low: that is another person.
    """
    head = _NAME_SEPARATORS.split(_PROFILE_NOISE.sub(" ", title), maxsplit=1)[0]
    words = [w for w in re.split(r"[\s.]+", head) if w and _key(w) not in _HONORIFICS]
    if not words:
        return 0.0
    forms = _token_forms(words)
    first = _first_in(target, words, forms)
    last = _best(target.last, forms)
    if not first:
        return round(0.25 * last, 4)
    return round(0.45 * first + 0.55 * last, 4)


def _slug_tokens(slug: str) -> list[str]:
    """Slug words without numeric/hex suffixes (jane-doe-1a2b3c, jane-doe-bafcde -> jane, doe)."""
    words = [w for w in re.split(r"[-_]+", slug) if w and not _HAS_DIGIT.search(w)]
    if len(words) >= 2 and _HEX_WORD.match(words[-1]):
        words.pop()
    return [t for w in words for t in _fold(w)]


def slug_similarity(target: Target, slug: str) -> float:
    """Similarity of a profile slug to the best first/last spelling combination (0-1)."""
    tokens = _slug_tokens(slug)
    if not tokens:
        return 0.0
    forms = _token_forms(tokens)
    first = _best(target.first, forms)
    last = _best(target.last, forms)
    best = 0.0
    if first and last:
        best = min(first, last)
    elif last and any(len(t) == 1 for t in tokens):
        initials = {t for t in tokens if len(t) == 1}
        if any(text[0] in initials for text, _ in target.first):
            best = 0.8 * last
    joined = "".join(tokens)
    for f_text, f_credit in target.first:
        for l_text, l_credit in target.last:
            credit = min(f_credit, l_credit)
            for cand, factor in (
                (f_text + l_text, 1.0),
                (l_text + f_text, 0.95),
                (f_text[0] + l_text, 0.8),
                (f_text + l_text[0], 0.7),
            ):
                ratio = fuzz.ratio(joined, cand) / 100.0
                if ratio >= 0.8:
                    best = max(best, ratio * factor * credit)
    return round(min(best, 1.0), 4)


def _segments(text: str) -> list[list[str]]:
    """Token lists of the separator-delimited segments of a title or snippet."""
    return [list(t) for s in _SEGMENT_SEPARATORS.split(text) if (t := _fold(s.replace(".", "")))]


def _strip_suffixes(tokens: list[str]) -> list[str]:
    """Drop trailing legal suffixes of a segment."""
    core = list(tokens)
    while core and core[-1] in LEGAL_SUFFIXES:
        core.pop()
    return core if core else tokens


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    """True when needle occurs as a contiguous run of haystack."""
    n = len(needle)
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def company_match(target: Target, title: str, snippet: str) -> float:
    """1 for a segment naming exactly the company, less for near spellings or a longer name."""
    want = list(target.company)
    want_joined = "".join(want)
    best = 0.0
    segments = _segments(_EDUCATION.sub(" ", title))[1:] + _segments(_EDUCATION.sub(" ", snippet))
    for seg in segments:
        core = _strip_suffixes(seg)
        if core == want:
            return 1.0
        ratio = fuzz.ratio("".join(core), want_joined) / 100.0
        if ratio >= 0.9:
            best = max(best, ratio * 0.95)
        elif _contains(core, want):
            best = max(best, 0.6 if len(core) > len(want) + 1 else 0.7)
    return round(best, 4)


def _overlap(wanted: tuple[str, ...], text: str) -> float | None:
    """Share of the wanted words present in the text; None when nothing was asked."""
    if not wanted:
        return None
    present = set(_fold(text))
    return round(sum(1 for w in wanted if w in present) / len(wanted), 4)


@lru_cache(maxsize=4096)
def signals(target: Target, hit: SearchHit) -> Signals:
    """All raw signals of one hit whose URL is a profile (ProfileUrlError otherwise)."""
    slug = profile_slug(hit.url)
    text = f"{hit.title} {hit.snippet}"
    return Signals(
        slug_similarity=slug_similarity(target, slug),
        name_in_title=name_in_title(target, hit.title),
        company_match=company_match(target, hit.title, hit.snippet),
        title_match=_overlap(target.title, text),
        location_match=_overlap(target.location, text),
    )


def _base_score(s: Signals, w: Weights) -> float:
    """Score of the signals before the ambiguity penalty; a weak name caps everything."""
    if s.name_in_title > 0:
        name = w.title_name * s.name_in_title + w.slug * s.slug_similarity
    else:
        name = w.slug_only * s.slug_similarity
    optional = [v for v in (s.title_match, s.location_match) if v is not None]
    evidence = s.company_match
    if optional:
        evidence = (1 - w.optional) * evidence + w.optional * sum(optional) / len(optional)
    return name * (w.company_floor + (1 - w.company_floor) * evidence)


def rank_hits(
    target: Target,
    hits: Iterable[tuple[SearchHit, str]],
    *,
    weights: Weights = DEFAULT_WEIGHTS,
) -> list[LinkedInCandidate]:
    """Score (hit, query) pairs: drop non-profiles, merge by canonical URL, penalise ambiguity, rank."""
    scored: dict[str, tuple[float, Signals, SearchHit, str]] = {}
    for hit, query in hits:
        try:
            url = normalize_profile_url(hit.url)
            sig = signals(target, hit)
        except ProfileUrlError:
            continue
        base = _base_score(sig, weights)
        kept = scored.get(url)
        if kept is None or base > kept[0]:
            scored[url] = (base, sig, hit, query)
    same_name = {
        url: s.company_match
        for url, (_, s, _, _) in scored.items()
        if (s.name_in_title or s.slug_similarity) >= weights.same_name
    }
    out: list[LinkedInCandidate] = []
    for url, (base, sig, hit, query) in scored.items():
        peers = 1
        if url in same_name:
            floor = sig.company_match - weights.indistinct_company
            peers = sum(1 for u, c in same_name.items() if u != url and c >= floor) + 1
        penalty = min(weights.ambiguity_cap, weights.ambiguity_step * (peers - 1))
        evidence = CandidateEvidence(
            slug_similarity=sig.slug_similarity,
            name_in_title=sig.name_in_title,
            company_match=sig.company_match,
            title_match=sig.title_match,
            location_match=sig.location_match,
            ambiguity_penalty=round(penalty, 4),
            same_name_hits=peers,
            query=query,
            backend=hit.backend,
            rank=hit.rank,
        )
        score = round(min(1.0, max(0.0, base * (1 - penalty))), 4)
        out.append(
            LinkedInCandidate(
                url=url, score=score, title=hit.title, snippet=hit.snippet, evidence=evidence
            )
        )
    out.sort(key=lambda c: (-c.score, c.evidence.rank, c.url))
    return out
