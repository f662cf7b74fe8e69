"""Domain typo suggestions ("gmial.con" -> "gmail.com"), tuned for very few false positives.

Two rules, both keyboard-aware (see :mod:`emailintel._keyboard`): a near miss of a popular
provider, and, only when the TLD does not exist, the nearest common suffix. Known domains (the
targets, free and disposable lists) and anything far from a target are left alone. A suggestion is
data only: it never makes an address invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache

from publicsuffixlist import PublicSuffixList
from rapidfuzz.distance import OSA
from rapidfuzz.process import extract

from emailintel._keyboard import typo_cost
from emailintel.address import ParsedAddress, parse_address
from emailintel.errors import AddressError, InjectionError
from emailintel.lists import default_lists, read_data_lines

SUFFIX_BUDGET = 1.0
MAX_RAW_EDITS = 2  # no provider name absorbs more than two edits
MAX_DOMAIN = 253
MIN_DISTINCTIVE_SLD = 5  # shorter provider names (web, live, mail) are ordinary words
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Target:
    """A provider domain split into its registrable label and its public suffix."""

    domain: str
    sld: str
    suffix: str
    rank: int


@dataclass(frozen=True, slots=True)
class TargetIndex:
    """The packaged targets, indexed for cheap look-ups."""

    providers: dict[str, tuple[Target, ...]]
    domains: frozenset[str]
    dotless: dict[str, str]
    suffixes: tuple[str, ...]


def sld_budget(length: int) -> tuple[float, int]:
    """Weighted cost and number of edits a provider name of ``length`` letters may absorb."""
    if length < MIN_DISTINCTIVE_SLD:
        return 0.0, 0
    if length < 7:
        return 1.0, 1
    if length < 9:
        return 1.0, 2
    return 1.5, 2


def _parse_targets(lines: list[str]) -> tuple[list[str], list[str]]:
    """Split the target file's lines into its ``[providers]`` and ``[suffixes]`` sections."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is None:
            raise ValueError(f"typo target {line!r} is outside a section")
        else:
            current.append(line.lower())
    return sections.get("providers", []), sections.get("suffixes", [])


@cache
def target_index() -> TargetIndex:
    """Load and index ``data/typo_targets.txt`` once."""
    provider_lines, suffixes = _parse_targets(read_data_lines("typo_targets.txt"))
    by_sld: dict[str, list[Target]] = {}
    for rank, domain in enumerate(provider_lines):
        sld, _, suffix = domain.partition(".")
        by_sld.setdefault(sld, []).append(Target(domain, sld, suffix, rank))
    return TargetIndex(
        providers={sld: tuple(ts) for sld, ts in by_sld.items()},
        domains=frozenset(provider_lines),
        dotless={d.replace(".", ""): d for d in provider_lines},
        suffixes=tuple(suffixes),
    )


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=4096)
def tld_exists(tld: str) -> bool:
    """True if ``tld`` is a top-level domain on the packaged Public Suffix List."""
    return _psl().publicsuffix(f"x.{tld}", accept_unknown=False) is not None


def _provider_match(sld: str, suffix: str, tld_known: bool, index: TargetIndex) -> str | None:
    """The provider ``sld.suffix`` most likely meant, or None."""
    best: tuple[float, int, str] | None = None
    near = extract(
        sld, index.providers.keys(), scorer=OSA.distance, score_cutoff=MAX_RAW_EDITS, limit=None
    )
    for target_sld, edits, _ in near:
        budget, max_edits = sld_budget(len(target_sld))
        if edits > max_edits:
            continue
        for target in index.providers[target_sld]:
            sld_cost = typo_cost(sld, target.sld)
            if sld_cost > budget:
                continue
            if sld_cost == 0 and tld_known and len(target.sld) < MIN_DISTINCTIVE_SLD:
                continue  # "web.co", "live.ca": a real TLD after an ordinary word
            if abs(len(suffix) - len(target.suffix)) > MAX_RAW_EDITS:
                continue
            suffix_cost = typo_cost(suffix, target.suffix, penalise_first=False)
            total = sld_cost + suffix_cost
            if suffix_cost > SUFFIX_BUDGET or total > max(SUFFIX_BUDGET, budget + 0.5):
                continue
            if best is None or (total, target.rank) < best[:2]:
                best = (total, target.rank, target.domain)
    return None if best is None else best[2]


def _suffix_match(labels: list[str], index: TargetIndex) -> str | None:
    """Replace a non-existent suffix by the single nearest common one; None if none or a tie."""
    scored: dict[str, tuple[float, int]] = {}
    for k in (2, 1):
        if len(labels) <= k:
            continue
        typed = ".".join(labels[-k:])
        for rank, suffix in enumerate(index.suffixes):
            if suffix.count(".") + 1 != k or abs(len(typed) - len(suffix)) > MAX_RAW_EDITS:
                continue
            cost = typo_cost(typed, suffix, penalise_first=False)
            fixed = ".".join([*labels[:-k], suffix])
            if cost <= SUFFIX_BUDGET and (cost, rank) < scored.get(fixed, (cost + 1, rank)):
                scored[fixed] = (cost, rank)
    ranked = sorted((score, fixed) for fixed, score in scored.items())
    if not ranked or (len(ranked) > 1 and ranked[0][0][0] == ranked[1][0][0]):
        return None
    return ranked[0][1]


@lru_cache(maxsize=65536)
def _suggest(name: str) -> str | None:
    index = target_index()
    if name in index.domains:
        return None
    lists = default_lists()
    if lists.is_free_provider(name):
        return None
    labels = name.split(".")
    if len(labels) == 1:
        return index.dotless.get(name)
    if not all(_LDH_LABEL.fullmatch(label) for label in labels):
        return None
    tld_known = tld_exists(labels[-1])
    # The disposable list holds typo-squats of big providers (gmial.com, hotmai.com): those still
    # get the provider suggestion, but no other disposable domain is "corrected".
    found = _provider_match(labels[0], ".".join(labels[1:]), tld_known, index)
    if found is None and not tld_known and not lists.is_disposable(name):
        found = _suffix_match(labels, index)
    return found


def suggest_domain(domain: str) -> str | None:
    """The domain the user probably meant (``"gmial.con"`` -> ``"gmail.com"``), or None."""
    name = domain.strip().rstrip(".").lower()
    if not name or len(name) > MAX_DOMAIN or not name.isascii() or name.startswith("["):
        return None
    return _suggest(name)


def _suggest_unparsed(text: str) -> str | None:
    """Suggest for an address that failed to parse only because of its domain ("a@gmailcom")."""
    local, at, domain = text.strip().rpartition("@")
    if not at or not local:
        return None
    fixed = suggest_domain(domain)
    if fixed is None:
        return None
    try:
        return parse_address(f"{local}@{fixed}").normalized
    except AddressError:
        return None


def suggest(address: str | ParsedAddress) -> str | None:
    """The whole corrected address, or None. Injection attempts still raise InjectionError."""
    if isinstance(address, ParsedAddress):
        parsed = address
    else:
        try:
            parsed = parse_address(address)
        except InjectionError:
            raise
        except AddressError as exc:
            if exc.code == "not_a_string":
                raise
            return _suggest_unparsed(address)
    fixed = suggest_domain(parsed.ascii_domain)
    return None if fixed is None else f"{parsed.local_part}@{fixed}"
