"""Pure rules of processing sessions: the state table, sender-data merging, leads as dataset
rows, the lead fields each enrichment needs, and the cells an enrichment adds to a row.

No I/O here, so each rule is property-tested; the store applies a transition as one conditional
UPDATE (``WHERE state IN sources(event)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from server.tabular.guess import column_type, guess_fields

__all__ = [
    "ENRICHMENTS",
    "FIELDS",
    "MAX_CELL",
    "MAX_COLUMNS",
    "PRICE_KEYS",
    "ColumnSet",
    "Enrichment",
    "InvalidSessionTransition",
    "LeadFields",
    "SessionEvent",
    "SessionState",
    "cells_of",
    "fields_of",
    "flatten_lead",
    "guess_mapping",
    "merge_sender_data",
    "next_state",
    "plan_row",
    "sources",
]


class SessionState(StrEnum):
    """Life of a session: ``processing`` while its job runs."""

    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SessionEvent(StrEnum):
    """What moves a session."""

    START = "start"  # the owner starts processing (re-processing from completed or failed)
    ABORT = "abort"  # the start was refused after the claim (no credits): back to where it was
    SUCCEED = "succeed"  # its job succeeded
    FAIL = "fail"  # its job failed
    CANCEL = "cancel"  # its job was cancelled


S = SessionState
_TABLE: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (S.CREATED, SessionEvent.START): S.PROCESSING,
    (S.COMPLETED, SessionEvent.START): S.PROCESSING,
    (S.FAILED, SessionEvent.START): S.PROCESSING,
    (S.PROCESSING, SessionEvent.SUCCEED): S.COMPLETED,
    (S.PROCESSING, SessionEvent.FAIL): S.FAILED,
    (S.PROCESSING, SessionEvent.CANCEL): S.CANCELLED,
}
"""(state, event) -> next state; ABORT is special: it returns to the state before START."""


class InvalidSessionTransition(Exception):
    """The event does not apply to the session's state."""

    def __init__(self, state: SessionState, event: SessionEvent) -> None:
        super().__init__(f"cannot {event.value} a session that is {state.value}")
        self.state = state
        self.event = event


def next_state(
    state: SessionState, event: SessionEvent, *, before: SessionState | None = None
) -> SessionState:
    """The state after ``event``; ABORT needs ``before`` (the state START left)."""
    if event is SessionEvent.ABORT:
        if state is S.PROCESSING and before is not None and (before, SessionEvent.START) in _TABLE:
            return before
        raise InvalidSessionTransition(state, event)
    try:
        return _TABLE[(state, event)]
    except KeyError:
        raise InvalidSessionTransition(state, event) from None


def sources(event: SessionEvent) -> frozenset[SessionState]:
    """The states ``event`` applies to (the store's ``WHERE state IN (...)``)."""
    if event is SessionEvent.ABORT:
        return frozenset({S.PROCESSING})
    return frozenset(state for (state, ev) in _TABLE if ev is event)


# --- sender data ------------------------------------------------------------------------------


def merge_sender_data(
    current: Mapping[str, Any],
    updates: Sequence[Mapping[str, Any]],
    mode: Literal["merge", "replace"],
) -> dict[str, Any]:
    """Apply ``updates`` in order: ``merge`` sets their top-level keys over ``current`` (a key
    whose value is null is removed); ``replace`` starts from nothing. Later updates win."""
    result: dict[str, Any] = {} if mode == "replace" else dict(current)
    for update in updates:
        for key, value in update.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = value
    return result


# --- leads as rows ----------------------------------------------------------------------------

MAX_COLUMNS = 500
"""Columns a dataset may have (original ones)."""
MAX_CELL = 10_000
"""Characters in one cell."""
NESTED = "columnValues"
"""Where the browser extension nests a lead's columns."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def flatten_lead(lead: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """A lead object as row cells, or the reason it is rejected.

    Top-level scalars keep their keys; ``columnValues.*`` fields are lifted with the prefix
    stripped (both the nested ``{"columnValues": {...}}`` and flat ``"columnValues.x"`` forms).
    On a name collision the ``columnValues`` field wins (it is the extension's cell) and the
    top-level one is kept as ``<name> (lead)``; any other nested object is rejected.
    """
    top: dict[str, str] = {}
    nested: dict[str, str] = {}
    prefix = NESTED + "."
    for key, value in lead.items():
        if key == NESTED and isinstance(value, Mapping):
            for inner, cell in value.items():
                if isinstance(cell, Mapping | list):
                    return {}, f"{NESTED}.{inner} is not a scalar"
                nested[str(inner)] = _text(cell)
        elif isinstance(value, Mapping | list):
            return {}, f"field {key[:100]!r} is not a scalar"
        elif key.startswith(prefix) and len(key) > len(prefix):
            nested[key[len(prefix) :]] = _text(value)
        else:
            top[key] = _text(value)
    cells: dict[str, str] = {}
    for key in sorted(top.keys() & nested.keys()):
        cells[f"{key} (lead)"] = top[key]
    for key, value in top.items():
        if key not in nested:
            cells[key] = value
    cells.update(nested)
    for key, value in cells.items():
        if not key.strip():
            return {}, "a field name is blank"
        if len(value) > MAX_CELL:
            return {}, f"field {key[:100]!r} is over {MAX_CELL} characters"
    if not any(value.strip() for value in cells.values()):
        return {}, "the lead has no values"
    return cells, None


class ColumnSet:
    """A dataset's columns as leads are added: a lead whose new fields would take the dataset
    over :data:`MAX_COLUMNS` is refused (its reason), the others' new names kept in order."""

    def __init__(self, existing: Iterable[str]) -> None:
        self.known = set(existing)
        self.added: list[str] = []

    def admit(self, cells: Mapping[str, str]) -> str | None:
        """Take the lead's new column names, or the reason it is refused."""
        new = [name for name in cells if name not in self.known]
        if len(self.known) + len(new) > MAX_COLUMNS:
            return f"its fields would take the dataset over {MAX_COLUMNS} columns"
        self.known.update(new)
        self.added.extend(new)
        return None


# --- what each enrichment needs ---------------------------------------------------------------

Enrichment = Literal["validate", "verify", "find", "linkedin"]
ENRICHMENTS: tuple[Enrichment, ...] = ("validate", "verify", "find", "linkedin")
PRICE_KEYS: Mapping[str, str] = {
    "validate": "email.validate",
    "verify": "email.dataset_verify",
    "find": "email.bulk_find",
    "linkedin": "leads.batch",
}
"""Enrichment -> the price key charged per row it answers (the bulk routes' prices)."""

FIELDS = ("email", "first_name", "last_name", "name", "company", "domain", "title", "location")
"""The lead fields a mapping names (column per field)."""
_EXTRA_ALIASES: Mapping[str, tuple[str, ...]] = {
    "title": ("title", "jobtitle", "position", "role", "headline"),
    "location": ("location", "city", "country", "region"),
}
"""Fields the upload guesser does not look for (it maps contact fields only)."""
_SQUASH = re.compile(r"[^a-z0-9]")


def guess_mapping(columns: Sequence[str], sample: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Lead field -> the column holding it: the upload preview's guess (header names and the
    sampled values agreeing), its ``full_name`` as ``name``, plus title and location by name."""
    rows = list(sample)
    types = {c: column_type(str(row.get(c, "") or "") for row in rows) for c in columns}
    mapping = {
        ("name" if g.field == "full_name" else g.field): g.column
        for g in guess_fields(list(columns), types)
        if g.field != "linkedin"
    }
    taken = set(mapping.values())
    for field, aliases in _EXTRA_ALIASES.items():
        for column in columns:
            if column not in taken and _SQUASH.sub("", column.lower()) in aliases:
                mapping[field] = column
                taken.add(column)
                break
    return mapping


@dataclass(frozen=True)
class LeadFields:
    """The fields of one row the enrichments read (blank cells are None)."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    domain: str | None = None
    title: str | None = None
    location: str | None = None

    @property
    def full_name(self) -> str | None:
        """First and last name, when both are known."""
        if self.first_name and self.last_name:
            return f"{self.first_name} {self.last_name}"
        return None


_DOMAIN_OF_URL = re.compile(r"^(?:[a-z]+://)?(?:www\.)?([^/:?#\s]+)", re.IGNORECASE)


def fields_of(data: Mapping[str, Any], mapping: Mapping[str, str]) -> LeadFields:
    """The row's lead fields through ``mapping``; a full name is split when first/last are
    missing, and a website URL is cut to its host."""

    def cell(field: str, limit: int) -> str | None:
        column = mapping.get(field)
        value = str(data.get(column, "") or "").strip() if column is not None else ""
        return value[:limit] if value else None

    first, last = cell("first_name", 100), cell("last_name", 100)
    name = cell("name", 200)
    if not (first and last) and name:
        parts = name.split()
        if len(parts) >= 2:
            first, last = parts[0][:100], parts[-1][:100]
    domain = cell("domain", 300)
    if domain:
        match = _DOMAIN_OF_URL.match(domain)
        domain = match.group(1).lower()[:253] if match else None
    return LeadFields(
        email=cell("email", 320),
        first_name=first,
        last_name=last,
        company=cell("company", 200),
        domain=domain or None,
        title=cell("title", 200),
        location=cell("location", 200),
    )


def plan_row(lead: LeadFields, wanted: Sequence[Enrichment]) -> tuple[Enrichment, ...]:
    """The requested enrichments this row has the fields for (the rest skip it uncharged):
    validate and verify need an email; find a first and last name and a domain or company;
    linkedin a full name and a company."""
    able: dict[str, bool] = {
        "validate": lead.email is not None,
        "verify": lead.email is not None,
        "find": lead.full_name is not None and (lead.domain or lead.company) is not None,
        "linkedin": lead.full_name is not None and lead.company is not None,
    }
    return tuple(e for e in ENRICHMENTS if e in wanted and able[e])


def cells_of(enrichment: Enrichment, result: Mapping[str, Any]) -> dict[str, Any]:
    """The columns an enrichment's answer adds to its row (compact: the job keeps these, the
    full answers stay with the single-call routes)."""
    if enrichment == "validate":
        return {"risk": result.get("risk_level"), "risk_score": result.get("score")}
    if enrichment == "verify":
        smtp = result.get("smtp") or {}
        return {
            "verified": result.get("risk_level"),
            "mailbox_exists": smtp.get("accepted") if isinstance(smtp, Mapping) else None,
        }
    if enrichment == "find":
        return {"found_email": result.get("email"), "found_pattern": result.get("pattern")}
    best = result.get("best")
    if isinstance(best, Mapping):
        return {"linkedin_url": best.get("url"), "linkedin_score": best.get("score")}
    return {"linkedin_url": None, "linkedin_score": None}
