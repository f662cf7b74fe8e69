"""Candidate addresses for a person at a domain, ranked by template priors or per-domain evidence.

Pure: no DNS, no SMTP. Priors come from package data (see :mod:`emailintel._templates`); known
addresses at the domain update them by a Dirichlet-multinomial posterior.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict

from emailintel._templates import Template, table
from emailintel.errors import AddressError, ConfigError, PersonNameError
from emailintel.names import PersonName, parse_name

__all__ = [
    "Candidate",
    "PatternDistribution",
    "PatternShare",
    "generate_candidates",
    "infer_patterns",
    "match_pattern",
    "normalize_domain",
    "prior_distribution",
    "templates",
]

MAX_LOCAL_PART = 64
MAX_ADDRESS = 254


class Candidate(BaseModel):
    """One guessed address with the template and name spelling that produced it."""

    model_config = ConfigDict(frozen=True)

    email: str
    local_part: str
    pattern: str
    probability: float
    variant: str
    """``primary`` or the non-primary spellings used, joined by ``+`` (e.g. ``nickname``)."""


class PatternShare(BaseModel):
    """A template's share of a domain's addresses, in percent."""

    model_config = ConfigDict(frozen=True)

    pattern: str
    percentage: float


class PatternDistribution(BaseModel):
    """Template shares (descending, summing to 100) and how much evidence moved them."""

    model_config = ConfigDict(frozen=True)

    patterns: tuple[PatternShare, ...]
    observations: int
    """Known addresses considered (at the domain, duplicates counted once)."""
    matched: int
    """Of those, how many some template explains."""


def templates() -> tuple[str, ...]:
    """All template strings in tie-break order."""
    return tuple(t.pattern for t in table().templates)


@lru_cache(maxsize=1024)
def normalize_domain(domain: str) -> str:
    """Lower-case IDNA ASCII form of a mail domain; :class:`AddressError` if it is not one."""
    if not isinstance(domain, str) or not domain.strip(" \t"):
        raise AddressError("empty domain")
    stripped = domain.strip(" \t")
    try:
        # test_environment: accept the reserved .test TLD, as parse_address does (local labs).
        info = validate_email(f"x@{stripped}", check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise AddressError(f"invalid domain {domain!r}: {exc}") from exc
    return info.ascii_domain.lower()


def _split_address(address: str) -> tuple[str, str]:
    """Lower-case local part and ASCII domain of a known address."""
    try:
        info = validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise AddressError(f"invalid known address {address!r}: {exc}") from exc
    return info.local_part.lower(), info.ascii_domain.lower()


@lru_cache(maxsize=1024)
def _kind_label(kinds: tuple[str, ...]) -> str:
    """Candidate ``variant`` label from the non-primary kinds used."""
    seen: list[str] = []
    for kind in kinds:
        for k in kind.split("+"):
            if k not in seen:
                seen.append(k)
    return "+".join(seen) or "primary"


def _render(template: Template, name: PersonName) -> list[tuple[str, float, tuple[str, ...]]]:
    """Every local part the template yields for the name, its weight and non-primary kinds."""
    acc: list[tuple[str, float, tuple[str, ...]]] = [("", 1.0, ())]
    for is_slot, text in template.parts:
        if not is_slot:
            acc = [(s + text, w, k) for s, w, k in acc]
            continue
        variants = name.slot(text)
        acc = [
            (s + v.text, w * v.weight, k if v.kind == "primary" else (*k, v.kind))
            for s, w, k in acc
            for v in variants
        ]
    return acc


def _present(name: PersonName) -> frozenset[str]:
    """Which name parts the person has."""
    return frozenset(
        part
        for part, v in (("first", name.first), ("middle", name.middle), ("last", name.last))
        if v
    )


def _as_name(name: str | PersonName) -> PersonName:
    """Parse a full name unless already parsed."""
    return name if isinstance(name, PersonName) else parse_name(name)


def match_pattern(address_local: str, name: str | PersonName) -> list[str]:
    """Templates (in tie-break order) that turn this person's name into the given local part.

    Case and a ``+tag`` are ignored; a trailing number (``john.smith2``) is tried only if the
    exact local part matches nothing. A one-word name is tried as given name and as surname.
    """
    by_local = _templates_by_local(_as_name(name))
    local = address_local.lower().split("+", 1)[0]
    found = by_local.get(local)
    if found is None:
        found = by_local.get(local.rstrip("0123456789"), frozenset())
    return [table().templates[i].pattern for i in sorted(found)]


@lru_cache(maxsize=1024)
def _templates_by_local(person: PersonName) -> Mapping[str, frozenset[int]]:
    """Every local part any reading of the name yields, with the indexes of templates yielding it."""
    readings = [person]
    if not person.first or not person.last:
        readings.append(person.swapped())
    out: dict[str, set[int]] = {}
    for p in readings:
        present = _present(p)
        for t in table().templates:
            if t.needs <= present:
                for text, _, _ in _render(t, p):
                    out.setdefault(text, set()).add(t.index)
    return {k: frozenset(v) for k, v in out.items()}


def _prior(company_size: int | None) -> dict[str, float]:
    """Template priors by pattern for a company size (None = overall)."""
    tab = table()
    return {t.pattern: p for t, p in zip(tab.templates, tab.priors(company_size), strict=True)}


def _distribution(
    weights: dict[str, float], observations: int, matched: int
) -> PatternDistribution:
    """Percentages sorted descending, ties in template order."""
    order = {t: i for i, t in enumerate(templates())}
    total = math.fsum(weights.values())
    ranked = sorted(weights, key=lambda t: (-weights[t], order[t]))
    return PatternDistribution(
        patterns=tuple(
            PatternShare(pattern=t, percentage=100 * weights[t] / total) for t in ranked
        ),
        observations=observations,
        matched=matched,
    )


def prior_distribution(company_size: int | None = None) -> PatternDistribution:
    """The template priors before any per-domain evidence, as percentages."""
    return _distribution(_prior(company_size), 0, 0)


def _posterior(
    known: Sequence[tuple[str, str]], domain: str | None, company_size: int | None
) -> tuple[dict[str, float], int, int]:
    """Dirichlet posterior mean over templates, with observation and match counts."""
    prior = _prior(company_size)
    counts = dict.fromkeys(prior, 0.0)
    seen: set[tuple[str, str]] = set()
    matched = 0
    for address, owner in known:
        local, dom = _split_address(address)
        if (domain is not None and dom != domain) or (local, dom) in seen:
            continue
        seen.add((local, dom))
        hits = match_pattern(local, owner)
        if not hits:
            continue
        matched += 1
        z = math.fsum(prior[t] for t in hits)
        for t in hits:
            counts[t] += prior[t] / z
    c = table().concentration
    posterior = {t: (c * prior[t] + counts[t]) / (c + matched) for t in prior}
    return posterior, len(seen), matched


def infer_patterns(
    known: Sequence[tuple[str, str]],
    *,
    domain: str | None = None,
    company_size: int | None = None,
) -> PatternDistribution:
    """Posterior template shares from known ``(address, owner full name)`` pairs.

    The prior is the (size-conditioned) template table scaled by a modest concentration, so one
    matched address reorders the ranking and a handful make its template near-certain. With
    ``domain`` set, addresses elsewhere are ignored. An address matching several templates splits
    its count among them in proportion to their priors.
    """
    wanted = normalize_domain(domain) if domain is not None else None
    posterior, observations, matched = _posterior(known, wanted, company_size)
    return _distribution(posterior, observations, matched)


def generate_candidates(
    name: str | None,
    domain: str,
    *,
    first: str | None = None,
    middle: str | None = None,
    last: str | None = None,
    company_size: int | None = None,
    known: Sequence[tuple[str, str]] = (),
    nicknames: bool = True,
    limit: int | None = None,
) -> list[Candidate]:
    """Ranked candidate addresses for a person at ``domain``; probabilities sum to 1.

    Templates missing a needed name part (e.g. no middle name) are skipped and the rest
    renormalised; ``known`` addresses at this domain replace the priors by the posterior.
    Duplicate addresses pool their probability; ``limit`` keeps the top ones, renormalised.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, not {limit!r}")
    ascii_domain = normalize_domain(domain)
    person = parse_name(name, first=first, middle=middle, last=last, nicknames=nicknames)
    weights = _posterior(known, ascii_domain, company_size)[0] if known else _prior(company_size)
    present = _present(person)
    usable = [t for t in table().templates if t.needs <= present]
    total = math.fsum(weights[t.pattern] for t in usable)
    longest = min(MAX_LOCAL_PART, MAX_ADDRESS - len(ascii_domain) - 1)
    mass: dict[str, float] = {}
    # local -> (largest single contribution, its template, its spelling kinds)
    label: dict[str, tuple[float, Template, tuple[str, ...]]] = {}
    for t in usable:
        share = weights[t.pattern] / total
        for local, weight, kinds in _render(t, person):
            if len(local) > longest:
                continue
            p = share * weight
            if local in mass:
                mass[local] += p
                if p <= label[local][0]:
                    continue
            else:
                mass[local] = p
            label[local] = (p, t, kinds)
    if not mass:
        raise PersonNameError(
            f"every address for this name is longer than {MAX_LOCAL_PART} characters"
        )
    ranked = sorted((-m, label[local][1].index, local) for local, m in mass.items())
    if limit is not None:
        ranked = ranked[:limit]
    total_mass = math.fsum(mass[local] for _, _, local in ranked)
    # Order by the published (normalised) probability: dividing can turn a hair's difference in
    # mass into a tie, which must then fall back to template order like any other tie.
    final = sorted((-(mass[local] / total_mass), index, local) for _, index, local in ranked)
    out = []
    for neg_p, _, local in final:
        _, template, kinds = label[local]
        out.append(
            Candidate(
                email=f"{local}@{ascii_domain}",
                local_part=local,
                pattern=template.pattern,
                probability=-neg_p,
                variant=_kind_label(kinds),
            )
        )
    return out
