"""Offline, versioned lists: disposable domains, free/webmail providers and role local parts.

Everything ships with the package (the disposable list comes from the installed
``disposable-email-domains`` package); nothing is downloaded, and nothing is read until first use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import metadata, resources

from emailintel._gibberish import looks_gibberish

__all__ = ["Lists", "default_lists", "looks_gibberish", "normalize_domain", "normalize_role"]


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII (IDNA) form of a domain without a trailing dot, for list look-ups."""
    text = domain.strip().rstrip(".").lower()
    if not text.isascii():
        # Not encodable: it cannot be on any list, and the Unicode form matches nothing.
        with contextlib.suppress(UnicodeError):
            text = text.encode("idna").decode("ascii")
    return text


def normalize_role(local_part: str) -> str:
    """A local part lower-cased, without ``+tag``, quotes or the separators ``. _ -``."""
    text = local_part.strip()
    if text.startswith('"'):
        text = text.strip('"')
    text = text.lower().split("+", 1)[0]
    return text.replace(".", "").replace("_", "").replace("-", "")


def read_data_lines(name: str) -> list[str]:
    """Non-comment, non-blank lines of a packaged data file."""
    text = resources.files("emailintel").joinpath("data", name).read_text(encoding="utf-8")
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def parse_version(text: str) -> str:
    """The value of a data file's ``# version:`` line; ValueError if it has none."""
    for line in text.splitlines():
        if line.startswith("# version:") and (version := line.split(":", 1)[1].strip()):
            return version
    raise ValueError("data file has no '# version:' line")


def data_version(name: str) -> str:
    """The version of a packaged data file."""
    return parse_version(
        resources.files("emailintel").joinpath("data", name).read_text(encoding="utf-8")
    )


@dataclass(frozen=True, slots=True)
class Lists:
    """Immutable list set; look-ups are case-insensitive and never touch the network."""

    disposable: frozenset[str] = field(repr=False)
    free: frozenset[str] = field(repr=False)
    role: frozenset[str] = field(repr=False)
    allowed_domains: frozenset[str] = field(default=frozenset(), repr=False)
    allowed_roles: frozenset[str] = field(default=frozenset(), repr=False)
    version: str = field(default="custom")

    def is_disposable(self, domain: str) -> bool:
        """True if ``domain`` or a parent domain is disposable and not explicitly allowed."""
        name = normalize_domain(domain)
        while name:
            if name in self.allowed_domains:
                return False
            if name in self.disposable:
                return True
            dot = name.find(".")
            if dot < 0:
                return False
            name = name[dot + 1 :]
        return False

    def is_free_provider(self, domain: str) -> bool:
        """True if ``domain`` is exactly a free/webmail provider's mail domain."""
        name = normalize_domain(domain)
        return name in self.free and name not in self.allowed_domains

    def is_role(self, local_part: str) -> bool:
        """True if the local part names a function (info, sales, no-reply...) rather than a person."""
        name = normalize_role(local_part)
        return name in self.role and name not in self.allowed_roles

    def with_additions(
        self,
        *,
        disposable: Iterable[str] = (),
        free: Iterable[str] = (),
        role: Iterable[str] = (),
        allow: Iterable[str] = (),
    ) -> Lists:
        """A copy with the user's entries added; ``allow`` lifts false positives from every list."""
        allowed = [a for a in allow if a.strip()]
        return replace(
            self,
            disposable=self.disposable | {normalize_domain(d) for d in disposable if d.strip()},
            free=self.free | {normalize_domain(d) for d in free if d.strip()},
            role=self.role | {normalize_role(r) for r in role if r.strip()},
            allowed_domains=self.allowed_domains | {normalize_domain(a) for a in allowed},
            allowed_roles=self.allowed_roles | {normalize_role(a) for a in allowed},
            version=self.version if self.version.endswith("+user") else f"{self.version}+user",
        )


@cache
def default_lists() -> Lists:
    """The packaged lists, loaded once on first use."""
    from disposable_email_domains import blocklist

    disposable_version = metadata.version("disposable-email-domains")
    free_version = data_version("free_providers.txt")
    role_version = data_version("role_local_parts.txt")
    return Lists(
        disposable=frozenset(normalize_domain(d) for d in blocklist),
        free=frozenset(normalize_domain(d) for d in read_data_lines("free_providers.txt")),
        role=frozenset(normalize_role(r) for r in read_data_lines("role_local_parts.txt")),
        version=f"free={free_version};role={role_version};disposable={disposable_version}",
    )
