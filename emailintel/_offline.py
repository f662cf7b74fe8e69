"""What a domain and a local part each contribute to an offline result, computed once per part.

Bulk lists repeat the same domains and the same local parts (first names, role names) over and
over; each part's syntax verdict, list look-ups and typo suggestion are kept here (bounded), so
``validate_offline`` on a common address costs a split and two dictionary look-ups. A part the
fast path does not take is cached as ``None`` and the address goes the general way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from emailintel import _fastsyntax
from emailintel._gibberish import looks_gibberish
from emailintel.lists import Lists

MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
MAX_PARTS = 100_000  # entries per cache before it is emptied


class DomainPart(NamedTuple):
    """A plain ASCII domain, lower-cased, with its list facts and typo correction."""

    domain: str
    disposable: bool
    free: bool
    fixed: str | None


class LocalPart(NamedTuple):
    """A normalised dot-atom local part with its octet count and list facts."""

    local: str
    octets: int
    role: bool
    gibberish: bool


class Parts:
    """Bounded caches of per-part facts for one list set and typo setting."""

    def __init__(
        self,
        lists: Callable[[], Lists],
        domain_facts: Callable[[str], tuple[bool, bool, str | None]],
    ) -> None:
        self._lists = lists
        self._domain_facts = domain_facts
        self.domains: dict[str, DomainPart | None] = {}
        self.locals: dict[str, LocalPart | None] = {}

    def add_domain(self, raw: str) -> DomainPart | None:
        """Compute, keep and return the facts of a domain as it appears after the ``@``."""
        if len(self.domains) >= MAX_PARTS:
            self.domains.clear()
        domain = _fastsyntax.simple_domain(raw, allow_test_tld=True)
        part = None
        if domain is not None:
            part = DomainPart(domain, *self._domain_facts(domain))
        self.domains[raw] = part
        return part

    def add_local(self, raw: str) -> LocalPart | None:
        """Compute, keep and return the facts of a local part as it appears before the ``@``."""
        if len(self.locals) >= MAX_PARTS:
            self.locals.clear()
        parsed = _fastsyntax.parse_local(raw, max_octets=MAX_LOCAL_OCTETS) if raw else None
        part = None
        if parsed is not None:
            local = parsed.normalized
            part = LocalPart(
                local, parsed.octets, self._lists().is_role(local), looks_gibberish(local)
            )
        self.locals[raw] = part
        return part
