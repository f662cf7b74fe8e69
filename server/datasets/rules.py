"""Pure rules of datasets: the risk columns a verification writes into a row, the "above the
threshold" test a prune deletes by, which column holds the email, export headers, CSV-injection
neutralising and download file names. No I/O: every rule is property-tested."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EMAIL_HEADERS",
    "RISK_COLUMNS",
    "RISK_LEVELS",
    "ExportColumn",
    "Threshold",
    "above",
    "detect_email_column",
    "download_filename",
    "export_columns",
    "failure_cells",
    "neutralise",
    "risk_cells",
    "risk_of_verdict",
    "stored_risk",
]

RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high")
"""Risk levels from safest to riskiest (a prune's ``max_risk`` names one)."""

_VERDICT_RISK = {"valid": "low", "risky": "medium", "unknown": "medium", "invalid": "high"}

RISK_COLUMNS: tuple[str, ...] = ("risk", "risk_score", "verdict", "smtp_status", "reason")
"""The columns a verification adds to a row, in export order."""

Threshold = str | int
"""A risk level (``"low"``, ``"medium"``, ``"high"``) or a risk score 0-100."""


def risk_of_verdict(verdict: object) -> str | None:
    """The risk level of an emailintel verdict (``valid`` → low ... ``invalid`` → high)."""
    return _VERDICT_RISK.get(verdict) if isinstance(verdict, str) else None


def _smtp_status(smtp: object) -> str:
    if not isinstance(smtp, Mapping) or not smtp.get("checked"):
        return "not_checked"
    if smtp.get("catch_all") or smtp.get("provider_accepts_all"):
        return "catch_all"
    if smtp.get("accepted") is True:
        return "accepted"
    if smtp.get("mailbox_not_found"):
        return "mailbox_not_found"
    if smtp.get("mailbox_full") or smtp.get("mailbox_disabled"):
        return "mailbox_unavailable"
    if smtp.get("accepted") is False:
        return "rejected"
    return "unknown"


def risk_cells(result: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a verification result (the verify use case's JSON) adds to its row:
    ``risk`` level, ``risk_score`` (0 safest … 100 riskiest: 100 minus deliverability),
    ``verdict``, ``smtp_status`` and the main ``reason``."""
    score = result.get("score")
    reasons = result.get("reasons")
    return {
        "risk": risk_of_verdict(result.get("verdict")),
        "risk_score": 100 - score if isinstance(score, int) and 0 <= score <= 100 else None,
        "verdict": result.get("verdict") if isinstance(result.get("verdict"), str) else None,
        "smtp_status": _smtp_status(result.get("smtp")),
        "reason": reasons[0] if isinstance(reasons, list | tuple) and reasons else None,
    }


def failure_cells(code: str) -> dict[str, Any]:
    """The columns of a row whose address could not be verified (mail server unreachable ...):
    no risk (a prune keeps it), the failure's code as the reason."""
    return {
        "risk": None,
        "risk_score": None,
        "verdict": None,
        "smtp_status": "not_checked",
        "reason": code,
    }


def stored_risk(added: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """A verified row's (risk level rank, risk score) from its added columns; None when the row
    was never verified (or its columns are not ours)."""
    level = added.get("risk")
    if not isinstance(level, str) or level not in RISK_LEVELS:
        return None
    score = added.get("risk_score")
    valid_score = isinstance(score, int) and not isinstance(score, bool) and 0 <= score <= 100
    return RISK_LEVELS.index(level), score if valid_score else None


def above(added: Mapping[str, Any], threshold: Threshold) -> bool | None:
    """Whether a row's stored risk is above ``threshold`` (a level: riskier than it; a score:
    higher than it); None when the row was never verified (a prune keeps and counts it).

    A verified row without a score is compared by its level's upper bound for a numeric
    threshold (low 33, medium 66, high 100), so it is never kept by accident.
    """
    risk = stored_risk(added)
    if risk is None:
        return None
    rank, score = risk
    if isinstance(threshold, str):
        return rank > RISK_LEVELS.index(threshold)
    if score is None:
        score = (33, 66, 100)[rank]
    return score > threshold


EMAIL_HEADERS = ("email", "e-mail", "email address", "e-mail address", "work email", "mail")
"""Header names (case and spacing folded) taken for the email column, best first."""

_ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def _fold(header: str) -> str:
    return " ".join(header.replace("_", " ").lower().split())


def detect_email_column(
    columns: Sequence[str], sample: Iterable[Mapping[str, Any]] = ()
) -> str | None:
    """The column holding the email: a known header name, else a header containing "email",
    else the column whose sampled values look most like addresses (a majority needed)."""
    folded = {_fold(column): column for column in reversed(columns)}
    for name in EMAIL_HEADERS:
        if name in folded:
            return folded[name]
    for column in columns:
        if "email" in _fold(column) or "e-mail" in _fold(column):
            return column
    rows = list(sample)
    best, best_hits = None, 0
    for column in columns:
        values = [row.get(column) for row in rows]
        filled = [v for v in values if isinstance(v, str) and v.strip()]
        hits = sum(1 for v in filled if _ADDRESS.match(v.strip()))
        if filled and hits * 2 > len(filled) and hits > best_hits:
            best, best_hits = column, hits
    return best


@dataclass(frozen=True)
class ExportColumn:
    """One column of a download: where its cells come from and its header."""

    added: bool
    key: str
    header: str


def export_columns(columns: Sequence[str], added: Sequence[str]) -> list[ExportColumn]:
    """Original columns, then our added ones; an added column whose name an original column
    (or an earlier header) already has gets a `` (added)`` suffix, numbered when needed, so no
    header repeats and no user column is shadowed."""
    out: list[ExportColumn] = []
    taken: set[str] = set()
    for name in columns:
        out.append(ExportColumn(False, name, name))
        taken.add(name)
    for name in added:
        header = name
        if header in taken:
            header = f"{name} (added)"
            n = 2
            while header in taken:
                header = f"{name} (added {n})"
                n += 1
        out.append(ExportColumn(True, name, header))
        taken.add(header)
    return out


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """A cell safe to open in a spreadsheet: one starting like a formula (``= + - @``, tab or
    carriage return) gets a leading ``'`` so it is shown as text, never evaluated."""
    return "'" + text if text.startswith(_FORMULA_START) else text


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def download_filename(name: str, extension: str, *, fallback: str = "dataset") -> str:
    """An ASCII file name for Content-Disposition: accents folded, anything but letters, digits,
    ``. _ -`` and spaces dropped, at most 100 characters, never empty or hidden."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    cleaned = " ".join(_UNSAFE_NAME.sub(" ", ascii_name).split()).strip(" .-")[:100].strip(" .-")
    return f"{cleaned or fallback}.{extension}"
