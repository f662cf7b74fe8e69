"""What a domain and a local part each contribute to an offline result, computed once per part.

Bulk lists repeat the same domains and the same local parts (first names, role names) over and
over; each part's syntax verdict, list look-ups and typo suggestion are kept here (bounded), so
``validate_offline`` on a common address costs a split and two dictionary look-ups. A part the
fast path does not take is cached as ``REFUSED`` and the address goes the general way.
"""

from __future__ import annotations

from collections.abc import Callable

from emailintel import _fastsyntax
from emailintel._gibberish import looks_gibberish
from emailintel.address import MAX_ADDRESS_OCTETS, MAX_LOCAL_OCTETS
from emailintel.lists import Lists

__all__ = ["MAX_ADDRESS_OCTETS", "Parts"]

MAX_PARTS = 100_000  # entries per cache before it is emptied


# Plain tuples, unpacked on the hot path (a NamedTuple's attribute access costs a call each).
# ``code`` packs the part's booleans for the assessment index: domain bits 0-2, local bits 3-4.
DomainPart = tuple[str, int, bool, bool, str | None]
"""(lower-cased domain, code, disposable, free provider, typo-corrected domain)"""
LocalPart = tuple[str, int, int, bool]
"""(normalised local part, octets as the length checks count them, code, role account)"""
REFUSED_DOMAIN: DomainPart = ("", 0, False, False, None)  # identity-compared sentinels
REFUSED_LOCAL: LocalPart = ("", 0, 0, False)
CODES = 32  # distinct (domain code | local code) values
ROLE, GIBBERISH = 8, 16  # the local code's bits


class Parts:
    """Bounded caches of per-part facts for one list set and typo setting."""

    def __init__(
        self,
        lists: Callable[[], Lists],
        domain_facts: Callable[[str], tuple[bool, bool, str | None]],
    ) -> None:
        self._lists = lists
        self._role_lists: Lists | None = None
        self._domain_facts = domain_facts
        self.domains: dict[str, DomainPart] = {}
        self.locals: dict[str, LocalPart] = {}

    def add_domain(self, raw: str) -> DomainPart:
        """Compute, keep and return the facts of a domain as it appears after the ``@``."""
        if len(self.domains) >= MAX_PARTS:
            self.domains.clear()
        domain = _fastsyntax.simple_domain(raw, allow_test_tld=True)
        part = REFUSED_DOMAIN
        if domain is not None:
            disposable, free, fixed = self._domain_facts(domain)
            code = disposable | free << 1 | (fixed is not None) << 2
            part = (domain, code, disposable, free, fixed)
        self.domains[raw] = part
        return part

    def _resolve_lists(self) -> Lists:
        self._role_lists = self._lists()
        return self._role_lists

    def add_local(self, raw: str) -> LocalPart:
        """Compute, keep and return the facts of a local part as it appears before the ``@``."""
        if len(self.locals) >= MAX_PARTS:
            self.locals.clear()
        parsed = _fastsyntax.parse_local(raw, max_octets=MAX_LOCAL_OCTETS) if raw else None
        part = REFUSED_LOCAL
        if parsed is not None:
            local, octets = parsed
            role = (self._role_lists or self._resolve_lists()).is_role(local)
            code = ROLE if role else 0
            if looks_gibberish(local):
                code |= GIBBERISH
            part = (local, octets, code, role)
        self.locals[raw] = part
        return part
