"""Scopes of restricted keys (pure): ``<group>:read`` or ``<group>:write`` per resource group, or
``*`` for everything. ``write`` implies ``read``. Session JWTs carry every scope.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ALL", "GROUPS", "allows", "normalise", "scope_pattern"]

ALL = "*"
GROUPS: tuple[str, ...] = (
    "account",
    "credits",
    "email-finder",
    "email-verification",
    "lead-finder",
    "jobs",
    "datasets",
    "sessions",
    "extractions",
    "templates",
    "suppression",
    "sender-profiles",
    "bavimail",
    "webhooks",
    "campaigns",
)
"""Resource groups a key can be limited to (the seed's group names)."""

_LEVELS = ("read", "write")


def scope_pattern() -> str:
    """A regular expression every valid scope matches (for request models)."""
    groups = "|".join(GROUPS)
    return rf"^(\*|({groups}):(read|write))$"


def normalise(scopes: Iterable[str]) -> tuple[str, ...]:
    """Sorted, deduplicated scopes; ValueError for an unknown group or level."""
    out: set[str] = set()
    for scope in scopes:
        if scope == ALL:
            return (ALL,)
        group, sep, level = scope.partition(":")
        if not sep or group not in GROUPS or level not in _LEVELS:
            raise ValueError(f"unknown scope {scope!r}")
        out.add(scope)
    return tuple(sorted(out))


def allows(granted: Iterable[str], group: str, write: bool) -> bool:
    """Whether ``granted`` permits a read (or write) on ``group``."""
    held = set(granted)
    if ALL in held or f"{group}:write" in held:
        return True
    return not write and f"{group}:read" in held
