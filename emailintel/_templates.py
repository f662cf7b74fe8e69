"""Local-part templates and their size-conditioned priors, loaded from package data.

The numbers live in ``emailintel/data/patterns.toml`` so they can be revised without code changes.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

from emailintel.errors import ConfigError

SLOTS = frozenset({"first", "middle", "last", "f", "m", "l"})
"""Template slots: full words and their initials."""

_BASE = {
    "first": "first",
    "f": "first",
    "middle": "middle",
    "m": "middle",
    "last": "last",
    "l": "last",
}
_TOKEN = re.compile(r"\{([a-z]+)\}")
_LITERALS = frozenset({"", ".", "_", "-"})


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: alternating literals and slot names, plus the name parts it needs."""

    pattern: str
    index: int
    parts: tuple[tuple[bool, str], ...]
    """``(is_slot, text)`` pairs in order."""
    needs: frozenset[str]
    """Name parts (``first``/``middle``/``last``) that must be present."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """A company-size range (inclusive; ``high`` None = unbounded) with its template weights."""

    name: str
    low: int
    high: int | None
    weights: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class PatternTable:
    """All templates in tie-break order, normalised overall and per-bucket priors."""

    templates: tuple[Template, ...]
    overall: tuple[float, ...]
    buckets: tuple[Bucket, ...]
    concentration: float

    def priors(self, company_size: int | None = None) -> tuple[float, ...]:
        """Template priors (summing to 1) for a company of this many people, or overall."""
        if company_size is None:
            return self.overall
        if isinstance(company_size, bool) or not isinstance(company_size, int) or company_size < 1:
            raise ConfigError(f"company_size must be a positive integer, not {company_size!r}")
        for bucket in self.buckets:
            if company_size >= bucket.low and (bucket.high is None or company_size <= bucket.high):
                return bucket.weights
        return self.overall


def parse_template(pattern: str, index: int = 0) -> Template:
    """Parse ``"{first}.{last}"`` into parts; raises :class:`ConfigError` on anything else."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _TOKEN.finditer(pattern):
        literal = pattern[pos : m.start()]
        if literal not in _LITERALS or (literal and not parts):
            raise ConfigError(f"template {pattern!r}: bad literal {literal!r}")
        if m.group(1) not in SLOTS:
            raise ConfigError(f"template {pattern!r}: unknown slot {m.group(1)!r}")
        if literal:
            parts.append((False, literal))
        parts.append((True, m.group(1)))
        pos = m.end()
    if not parts or pos != len(pattern):
        raise ConfigError(f"template {pattern!r}: must be slots joined by '.', '_' or '-'")
    needs = frozenset(_BASE[text] for is_slot, text in parts if is_slot)
    return Template(pattern=pattern, index=index, parts=tuple(parts), needs=needs)


def _share(value: Any, where: str) -> float:
    """A positive finite share, or ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: share must be a number")
    share = float(value)
    if not math.isfinite(share) or share <= 0:
        raise ConfigError(f"{where}: share must be positive")
    return share


def _normalise(values: list[float]) -> tuple[float, ...]:
    """Scale to sum 1."""
    total = math.fsum(values)
    return tuple(v / total for v in values)


def load_table(text: str) -> PatternTable:
    """Parse and validate a patterns TOML document."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"patterns data is not TOML: {exc}") from exc
    try:
        raw_templates = doc["template"]
        raw_buckets = doc.get("bucket", [])
        concentration = _share(doc["inference"]["concentration"], "inference.concentration")
        templates: list[Template] = []
        overall: list[float] = []
        sized: list[dict[str, float]] = []
        for i, entry in enumerate(raw_templates):
            t = parse_template(str(entry["pattern"]), i)
            if any(t.pattern == o.pattern for o in templates):
                raise ConfigError(f"template {t.pattern!r} listed twice")
            templates.append(t)
            overall.append(_share(entry["overall"], t.pattern))
            sized.append(
                {str(k): _share(v, t.pattern) for k, v in entry.get("by_size", {}).items()}
            )
        buckets = [_bucket(b, overall, sized) for b in raw_buckets]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"patterns data is malformed: {exc!r}") from exc
    if not templates:
        raise ConfigError("patterns data has no templates")
    names = {b.name for b in buckets}
    unknown = {k for s in sized for k in s} - names
    if unknown:
        raise ConfigError(f"by_size names unknown buckets: {sorted(unknown)}")
    return PatternTable(
        templates=tuple(templates),
        overall=_normalise(overall),
        buckets=tuple(buckets),
        concentration=concentration,
    )


def _bucket(raw: dict[str, Any], overall: list[float], sized: list[dict[str, float]]) -> Bucket:
    """A size bucket; templates without a share split the remainder by overall share."""
    name = str(raw["name"])
    low = raw["min"]
    high = raw.get("max")
    if not isinstance(low, int) or (high is not None and (not isinstance(high, int) or high < low)):
        raise ConfigError(f"bucket {name!r}: bad range")
    given = [s.get(name) for s in sized]
    fixed = math.fsum(g for g in given if g is not None)
    free = math.fsum(o for o, g in zip(overall, given, strict=True) if g is None)
    if fixed >= 100 and free > 0:
        raise ConfigError(f"bucket {name!r}: given shares leave nothing for the other templates")
    scale = (100 - fixed) / free if free else 0.0
    weights = [g if g is not None else o * scale for o, g in zip(overall, given, strict=True)]
    return Bucket(name=name, low=low, high=high, weights=_normalise(weights))


@lru_cache(maxsize=1)
def table() -> PatternTable:
    """The packaged pattern table, loaded once."""
    return load_table(files("emailintel").joinpath("data/patterns.toml").read_text("utf-8"))
