"""Person-name normalisation for address guessing: split, strip titles, transliterate, expand.

Pure and deterministic. Every variant is lower-case ASCII made of ``a-z0-9`` and ``-``, so it
can be dropped into a dot-atom local part as is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from anyascii import anyascii

from emailintel.errors import PersonNameError

__all__ = [
    "NameParts",
    "NameVariant",
    "PersonName",
    "nicknames_for",
    "parse_name",
    "split_name",
    "word_variants",
]

MAX_NAME_CHARS = 256
"""Longer inputs are not names; refusing them bounds the work per call."""

# Relative weights before per-slot normalisation; the primary spelling is always 1.0.
_W_LOCALE_ALT = 0.7  # ü -> u when the primary is ü -> ue (both occur in real mailboxes)
_W_HYPHEN_DROPPED = 0.9
_W_FIRST_PART = 0.5
_W_LAST_PART = 0.35
_W_PARTICLE_DROPPED = 0.7
_W_PARTICLE_HYPHEN = 0.5  # al-rashid next to alrashid
_W_GIVEN_NICKNAME = 0.6  # a nickname the caller wrote in quotes or parentheses
_NICKNAME_MASS = 0.25  # all dictionary nicknames together, relative to the primary
_NICKNAME_DECAY = 0.85
_MAX_NICKNAMES = 6


def _wordset(words: str) -> frozenset[str]:
    """Frozen set of the space-separated words."""
    return frozenset(words.split())


TITLES = _wordset(
    "mr mrs ms miss mx dr doctor prof professor sir dame lord lady rev revd reverend fr father "
    "sr sister br brother hon honorable honourable judge capt captain col colonel gen general "
    "lt maj major sgt cmdr adm herr frau dott ing mag dipl sra srta mme mlle"
)
"""Honorifics stripped from the start of a name (compared lower-case, dots removed)."""

SUFFIXES = _wordset(
    "jr jnr sr snr ii iii iv 2nd 3rd 4th phd dphil md dds dmd mba msc bsc mphil llm jd esq "
    "cpa cfa rn pmp obe mbe cbe kbe frs facs mfa edd psyd dvm pharmd"
)
"""Generational and academic suffixes stripped from the end of a name."""

PARTICLES = _wordset(
    "van von der den de del della dela des di da das do dos du la le les lo ter ten te "
    "vander vande zu zum zur af av bin binti bint ibn ben bat al el ul abu ap mac"
)
"""Surname particles: the surname is tried with and without them."""

_HYPHEN_PREFIXES = _wordset("al el ul ad as ash at ar az ibn bin ben abu")
"""Particles written glued with a hyphen (al-Rashid); the hyphen part is a particle, not a name."""

# char -> (primary, alternative) spellings; the rest is left to anyascii.
_LOCALE: dict[str, tuple[str, str]] = {
    "ü": ("ue", "u"),
    "ö": ("oe", "o"),
    "ä": ("ae", "a"),
    "ß": ("ss", "ss"),
    "ø": ("o", "oe"),
    "å": ("aa", "a"),
    "æ": ("ae", "ae"),
}
_APOSTROPHES = "'’ʼ`´‘ʻ"
_DROP: dict[str, str | None] = dict.fromkeys(_APOSTROPHES)
_LOCALE_PRIMARY = str.maketrans(_DROP | {k: v[0] for k, v in _LOCALE.items()})
_LOCALE_ALT = str.maketrans(_DROP | {k: v[1] for k, v in _LOCALE.items()})
_KEEP_CATEGORIES = ("L", "M", "N")
_SEPARATORS = " \t\r\n\f\v-‐‑‒–—,."
_QUOTED = re.compile(r"\(([^()]*)\)|\"([^\"]*)\"|“([^”]*)”|(?<!\S)'([^'\s]+)'(?!\S)")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_HAS_LETTER = re.compile(r"[a-z]")


@dataclass(frozen=True, slots=True)
class NameVariant:
    """One spelling of a name slot: ASCII text, its share of the slot, and why it exists."""

    text: str
    weight: float
    kind: str


@dataclass(frozen=True, slots=True)
class NameParts:
    """A name split into raw (untransliterated) words, titles and suffixes already removed."""

    first: str | None
    middle: tuple[str, ...]
    last: str | None
    nicknames: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PersonName:
    """Weighted spellings per slot, each tuple sorted by weight (primary first) and summing to 1.

    ``f``, ``m`` and ``l`` are the initials of ``first``, ``middle`` and ``last``, derived once.
    """

    first: tuple[NameVariant, ...]
    middle: tuple[NameVariant, ...]
    last: tuple[NameVariant, ...]
    f: tuple[NameVariant, ...] = field(init=False, repr=False, compare=False)
    m: tuple[NameVariant, ...] = field(init=False, repr=False, compare=False)
    l: tuple[NameVariant, ...] = field(init=False, repr=False, compare=False)  # noqa: E741

    def __post_init__(self) -> None:
        object.__setattr__(self, "f", _initials(self.first))
        object.__setattr__(self, "m", _initials(self.middle))
        object.__setattr__(self, "l", _initials(self.last))

    def slot(self, name: str) -> tuple[NameVariant, ...]:
        """Variants for a template slot: ``first``/``middle``/``last`` or initials ``f``/``m``/``l``."""
        if name not in _SLOT_NAMES:
            raise KeyError(name)
        variants: tuple[NameVariant, ...] = getattr(self, name)
        return variants

    def swapped(self) -> PersonName:
        """The same words read the other way round (a lone word taken as the surname)."""
        return PersonName(first=self.last, middle=self.middle, last=self.first)


_SLOT_NAMES = frozenset({"first", "middle", "last", "f", "m", "l"})


def _initials(variants: tuple[NameVariant, ...]) -> tuple[NameVariant, ...]:
    """First letters of the variants, weights pooled per letter."""
    return _merge((v.text[0], v.weight, v.kind) for v in variants)


def _merge(items: Iterable[tuple[str, float, str]]) -> tuple[NameVariant, ...]:
    """Sum weights of equal texts (keeping the heaviest kind) and normalise to 1."""
    mass: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    order: dict[str, int] = {}
    for text, weight, kind in items:
        if not text or weight <= 0:
            continue
        mass[text] = mass.get(text, 0.0) + weight
        order.setdefault(text, len(order))
        if text not in best or weight > best[text][0]:
            best[text] = (weight, kind)
    total = sum(mass.values())
    if total <= 0:
        return ()
    ranked = sorted(mass, key=lambda t: (-mass[t], order[t]))
    return tuple(NameVariant(t, mass[t] / total, best[t][1]) for t in ranked)


def _clean(text: str) -> str:
    """NFC, keep letters/marks/numbers/apostrophes/separators; everything else becomes a space."""
    out = []
    for ch in unicodedata.normalize("NFC", text):
        if (
            ch in _APOSTROPHES
            or ch in _SEPARATORS
            or unicodedata.category(ch)[0] in _KEEP_CATEGORIES
        ):
            out.append(ch)
        else:
            out.append(" ")
    return "".join(out)


def _key(word: str) -> str:
    """Comparison key for titles, suffixes and particles."""
    return _NOT_WORD.sub("", anyascii(word.lower()).lower())


def _ascii(word: str, alt: bool = False) -> str:
    """Lower-case ASCII of one word, apostrophes dropped, only a-z0-9 kept."""
    low = word.lower().translate(_LOCALE_ALT if alt else _LOCALE_PRIMARY)
    return _NOT_WORD.sub("", anyascii(low).lower())


def _words(text: str) -> list[str]:
    """Split on whitespace, commas and dots; hyphens stay inside words."""
    return [w for w in re.split(r"[\s,.]+", text) if w]


def _usable(word: str) -> bool:
    """True if the word keeps at least one ASCII letter."""
    return bool(_HAS_LETTER.search(_ascii(word)))


def _strip_titles(words: list[str]) -> list[str]:
    """Drop leading honorifics."""
    i = 0
    while i < len(words) and _key(words[i]) in TITLES:
        i += 1
    return words[i:]


def _strip_suffixes(words: list[str]) -> list[str]:
    """Drop trailing generational and academic suffixes."""
    j = len(words)
    while j > 0 and _key(words[j - 1]) in SUFFIXES:
        j -= 1
    return words[:j]


def _strip_both(words: list[str]) -> list[str]:
    """Drop titles, suffixes and words without letters."""
    return [w for w in _strip_suffixes(_strip_titles(words)) if _usable(w)]


def split_name(name: str) -> NameParts:
    """Split a free-form full name ("Dr. José van der Berg Jr.", "Smith, John") into raw parts."""
    if len(name) > MAX_NAME_CHARS:
        raise PersonNameError(f"name longer than {MAX_NAME_CHARS} characters")
    nicknames: list[str] = []

    def _grab(m: re.Match[str]) -> str:
        nicknames.extend(w for g in m.groups() if g for w in _words(_clean(g)) if _usable(w))
        return " "

    text = _clean(_QUOTED.sub(_grab, name))
    segments = [_strip_both(_words(s)) for s in text.split(",")]
    segments = [s for s in segments if s]
    if not segments:
        raise PersonNameError(f"no usable name in {name!r}")
    if len(segments) == 2 and len(segments[0]) >= 1 and len(segments[1]) >= 1:
        # "Last, First Middle": a second segment made only of suffixes was already dropped.
        words = segments[1] + segments[0]
        return _parts(words, surname_start=len(segments[1]), nicknames=nicknames)
    words = [w for s in segments for w in s]
    return _parts(words, surname_start=None, nicknames=nicknames)


def _parts(words: list[str], surname_start: int | None, nicknames: list[str]) -> NameParts:
    """Assign words to slots; the surname is the last word plus any particles before it."""
    if len(words) == 1:
        return NameParts(first=words[0], middle=(), last=None, nicknames=tuple(nicknames))
    if surname_start is None:
        surname_start = len(words) - 1
        while surname_start > 1 and _key(words[surname_start - 1]) in PARTICLES:
            surname_start -= 1
    middle = tuple(w for w in words[1:surname_start] if _key(w) not in PARTICLES)
    return NameParts(
        first=words[0],
        middle=middle,
        last=" ".join(words[surname_start:]),
        nicknames=tuple(nicknames),
    )


def _transliterations(text: str) -> list[tuple[str, float, str]]:
    """The text (words separated by spaces/hyphens kept) in primary and locale-alternative ASCII."""
    pieces = re.split(r"([\s\-‐‑‒–—]+)", text)

    def render(alt: bool) -> str:
        out = []
        for p in pieces:
            if p and p[0] in " \t\r\n\f\v":
                out.append(" ")
            elif p and p[0] in "-‐‑‒–—":
                out.append("-")
            else:
                out.append(_ascii(p, alt))
        return "".join(out)

    primary = render(False)
    alt = render(True)
    result = [(primary, 1.0, "primary")]
    if alt != primary:
        result.append((alt, _W_LOCALE_ALT, "transliterated"))
    return result


def _compounds(text: str, weight: float, kind: str) -> list[tuple[str, float, str]]:
    """Variants of a possibly multi-part word: hyphen kept, joined, first part, last part."""
    parts = [p for p in re.split(r"[\s-]+", text) if p]
    if not parts:
        return []
    if len(parts) == 1:
        return [(parts[0], weight, kind)]
    joined = "".join(parts)
    out: list[tuple[str, float, str]] = []
    if "-" in text:
        out.append(("-".join(parts), weight, kind))
        out.append((joined, weight * _W_HYPHEN_DROPPED, _k(kind, "hyphen-dropped")))
    else:
        out.append((joined, weight, kind))
    out.append((parts[0], weight * _W_FIRST_PART, _k(kind, "first-part")))
    out.append((parts[-1], weight * _W_LAST_PART, _k(kind, "last-part")))
    return out


def _k(kind: str, extra: str) -> str:
    """Add a kind to a variant's kind, ``primary`` being the empty kind."""
    return extra if kind == "primary" else f"{kind}+{extra}"


def word_variants(text: str) -> tuple[NameVariant, ...]:
    """Weighted ASCII spellings of a given name or middle name (no particle handling)."""
    items = [c for t, w, k in _transliterations(text) for c in _compounds(t, w, k)]
    return _merge(items)


def _surname_variants(text: str) -> tuple[NameVariant, ...]:
    """Weighted spellings of a surname: compounds, locale forms, with and without particles."""
    words = text.split()
    start = 0
    while start < len(words) - 1 and _key(words[start]) in PARTICLES:
        start += 1
    particles = [_ascii(w) for w in words[:start]]
    core = " ".join(words[start:])
    glued = ""
    head, sep, tail = core.partition("-")
    if sep and tail and _key(head) in _HYPHEN_PREFIXES:
        glued, core = _ascii(head), tail
    prefix = "".join(particles) + glued
    items: list[tuple[str, float, str]] = []
    for t, w, k in _transliterations(core):
        for c_text, c_weight, c_kind in _compounds(t, w, k):
            if not prefix or "last-part" in c_kind:
                # a particle belongs to the first word of a compound surname, not the last
                items.append((c_text, c_weight, c_kind))
                continue
            items.append((prefix + c_text, c_weight, c_kind))
            if glued and not particles:
                items.append(
                    (f"{glued}-{c_text}", c_weight * _W_PARTICLE_HYPHEN, _k(c_kind, "hyphenated"))
                )
            items.append((c_text, c_weight * _W_PARTICLE_DROPPED, _k(c_kind, "particle-dropped")))
    return _merge(items)


@lru_cache(maxsize=1)
def _nicknamer() -> Any:
    """The nickname table, loaded on first use (it takes ~0.1 s)."""
    from nicknames import NickNamer

    return NickNamer()


@lru_cache(maxsize=8192)
def nicknames_for(name: str) -> tuple[str, ...]:
    """Dictionary nicknames and formal forms of an ASCII given name, most common-looking first.

    The ``nicknames`` package has no frequencies; a nickname shared by many formal names (bob,
    bill) is a popular one, so ranking favours those, then shorter ones.
    """
    namer = _nicknamer()
    found: set[str] = set(namer.nicknames_of(name)) | set(namer.canonicals_of(name))
    found = {n for n in (_ascii(x) for x in found) if len(n) >= 2 and n != name}
    ranked = sorted(found, key=lambda n: (-len(namer.canonicals_of(n)), len(n), n))
    return tuple(ranked[:_MAX_NICKNAMES])


def _first_variants(
    text: str, given_nicknames: Sequence[str], nicknames: bool
) -> tuple[NameVariant, ...]:
    """Given-name spellings plus written and dictionary nicknames at lower weights."""
    base = word_variants(text)
    items = [(v.text, v.weight, v.kind) for v in base]
    if not base:
        return ()
    primary_mass = base[0].weight
    for nick in given_nicknames:
        for v in word_variants(nick):
            items.append((v.text, v.weight * primary_mass * _W_GIVEN_NICKNAME, "nickname"))
    if nicknames and "-" not in base[0].text:
        dictionary = nicknames_for(base[0].text)
        if dictionary:
            norm = sum(_NICKNAME_DECAY**i for i in range(len(dictionary)))
            for i, nick in enumerate(dictionary):
                share = _NICKNAME_MASS * _NICKNAME_DECAY**i / norm
                items.append((nick, primary_mass * share, "nickname"))
    return _merge(items)


def _prepare(part: str | None, *, titles: bool, suffixes: bool) -> str | None:
    """Clean an explicit name part; None when nothing usable is left."""
    if part is None:
        return None
    if len(part) > MAX_NAME_CHARS:
        raise PersonNameError(f"name part longer than {MAX_NAME_CHARS} characters")
    words = _words(_clean(part))
    if titles:
        words = _strip_titles(words)
    if suffixes:
        words = _strip_suffixes(words)
    words = [w for w in words if _usable(w)]
    return " ".join(words) or None


def parse_name(
    name: str | None = None,
    *,
    first: str | None = None,
    middle: str | None = None,
    last: str | None = None,
    nicknames: bool = True,
) -> PersonName:
    """Turn a full name and/or explicit parts into weighted ASCII variants per slot.

    Explicit ``first``/``middle``/``last`` override the slot parsed from ``name``. Raises
    :class:`PersonNameError` when no slot has a usable word.
    """
    return _parse_cached(name, first, middle, last, nicknames)


@lru_cache(maxsize=4096)
def _parse_cached(
    name: str | None, first: str | None, middle: str | None, last: str | None, nicknames: bool
) -> PersonName:
    """parse_name with hashable arguments, cached."""
    parts = NameParts(first=None, middle=(), last=None)
    if name is not None and name.strip():
        try:
            parts = split_name(name)
        except PersonNameError:
            if first is None and last is None:
                raise
    first_text = _prepare(first, titles=True, suffixes=False) if first is not None else parts.first
    last_text = _prepare(last, titles=False, suffixes=True) if last is not None else parts.last
    if middle is not None:
        mid = _prepare(middle, titles=False, suffixes=False)
        middle_words: tuple[str, ...] = tuple(mid.split()) if mid else ()
    else:
        middle_words = parts.middle
    first_v = _first_variants(first_text, parts.nicknames, nicknames) if first_text else ()
    last_v = _surname_variants(last_text) if last_text else ()
    middle_v = word_variants(middle_words[0]) if middle_words else ()
    if not first_v and not last_v:
        raise PersonNameError(f"no usable name in {name!r} (first={first!r}, last={last!r})")
    return PersonName(first=first_v, middle=middle_v, last=last_v)
