"""What preflight counts in SQL, derived once per lead when it is stored (pure): the address's
domain, emailintel's offline verdict and a token string of the lead's variables, so that "which
leads lack ``{{x}}``" is a ``LIKE`` per variable instead of rendering every lead.

The token string is ``|`` + tokens joined by ``|`` + ``|``: ``=key`` for a key with a usable
value, ``!key`` for a key present without one, ``~folded`` for a folded name whose first key (in
sorted order, as the renderer picks it) has a usable value. A lead lacks variable ``n`` exactly
when :func:`lacks` says so, which is the renderer's rule (exact key wins, else the folded key).
Keys containing ``|`` are left out: no variable name can contain ``|`` or fold to one that does.
Names and keys are written with their ASCII capitals marked (:func:`_cased`), so SQLite's
case-blind LIKE still tells ``Name`` from ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.templates import render as tr

__all__ = ["LeadIndex", "blank", "filled", "folded", "index", "lacks", "var_index"]


@dataclass(frozen=True)
class LeadIndex:
    """The derived columns of one lead."""

    domain: str
    verdict: str
    verdict_detail: str
    var_index: str


def _cased(text: str) -> str:
    """``text`` with no ASCII capital left (``^`` marks one, ``^^`` is a ``^``): SQLite's LIKE
    ignores ASCII case, and the renderer's exact key match does not."""
    return "".join("^^" if c == "^" else "^" + c.lower() if "A" <= c <= "Z" else c for c in text)


def filled(name: str) -> str:
    """The token of a key with a usable value."""
    return f"|={_cased(name)}|"


def blank(name: str) -> str:
    """The token of a key present without a usable value."""
    return f"|!{_cased(name)}|"


def folded(name: str) -> str:
    """The token of a folded name that resolves to a usable value."""
    return f"|~{_cased(tr.fold(name))}|"


def var_index(data: Mapping[str, object]) -> str:
    """The token string of a lead's variables."""
    keys = sorted(k for k in data if isinstance(k, str) and "|" not in k)
    tokens = [("=" if tr.has_value(data[k]) else "!") + _cased(k) for k in keys]
    first: dict[str, str] = {}
    for key in keys:
        first.setdefault(tr.fold(key), key)
    tokens += ["~" + _cased(f) for f, key in first.items() if tr.has_value(data[key])]
    return "|" + "|".join(tokens) + "|"


def lacks(tokens: str, name: str) -> bool:
    """Whether a lead with these tokens renders ``{{name}}`` without a value (the rule the
    store's SQL states; kept here to test it against the renderer)."""
    if filled(name) in tokens:
        return False
    return blank(name) in tokens or folded(name) not in tokens


def index(email: str, data: Mapping[str, object], verdict: tuple[str, list[str]]) -> LeadIndex:
    """The derived columns of a lead, given emailintel's offline (verdict, reasons)."""
    kind, reasons = verdict
    return LeadIndex(
        domain=email.rpartition("@")[2],
        verdict=kind,
        verdict_detail=", ".join(reasons) or kind,
        var_index=var_index(data),
    )
