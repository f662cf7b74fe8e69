"""Launch checks (pure): from the facts about a campaign (its steps, schedule, senders,
templates, and its leads as counted by the store) to findings, each blocking or a warning, with
the first leads concerned. Launch is refused while any finding blocks; gathering the facts is
:mod:`server.campaigns.preflight_facts`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from server.templates import render as tr

__all__ = [
    "MAX_LEAD_DETAILS",
    "AliasFact",
    "Facts",
    "Finding",
    "Hits",
    "LeadDetail",
    "TemplateFact",
    "blocking",
    "check",
    "has_window",
    "missing_detail",
    "required",
    "texts",
]

Severity = Literal["blocking", "warning"]

MAX_LEAD_DETAILS = 20
"""Leads listed per finding (``count`` gives them all)."""


@dataclass(frozen=True)
class AliasFact:
    """A sending alias the campaign names: its address and its domain's status (None: no such
    alias of the user)."""

    id: str
    address: str | None
    domain_status: str | None


@dataclass(frozen=True)
class TemplateFact:
    """A stored template's parts."""

    subject: str
    text: str
    html: str | None


@dataclass(frozen=True)
class LeadDetail:
    """One lead a finding concerns, and what about it."""

    lead_id: str
    email: str
    detail: str


@dataclass(frozen=True)
class Hits:
    """The leads one lead-level check concerns: how many, and the first few."""

    count: int = 0
    leads: tuple[LeadDetail, ...] = ()


@dataclass(frozen=True)
class Facts:
    """Everything the checks look at (lead-level ones already counted by the store)."""

    steps: Sequence[Sequence[Mapping[str, Any]]]
    """Each step's variants."""
    schedule: Mapping[str, Any]
    aliases: Sequence[AliasFact]
    verified_domains: int
    open_leads: int
    """Leads still to send to."""
    missing: Hits = Hits()
    """Leads without a value for a variable that has no fallback (detail: the names)."""
    invalid: Hits = Hits()
    suppressed: Hits = Hits()
    risky: Hits = Hits()
    templates: Mapping[str, TemplateFact | None] = field(default_factory=dict)
    """Template id → its parts (None: not found)."""


@dataclass(frozen=True)
class Finding:
    """One problem: its code, severity, a message, how many leads it concerns and some of them."""

    code: str
    severity: Severity
    message: str
    count: int = 0
    leads: tuple[LeadDetail, ...] = ()


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def has_window(schedule: Mapping[str, Any]) -> bool:
    """Whether the schedule opens at all: some weekday and a start differing from the end (an
    end before the start is a window across midnight)."""
    try:
        return bool(schedule.get("days")) and _minutes(schedule["start"]) != _minutes(
            schedule["end"]
        )
    except (KeyError, ValueError, AttributeError, TypeError):
        return False


def _per_lead(code: str, severity: Severity, message: str, hits: Hits) -> list[Finding]:
    if not hits.count:
        return []
    return [Finding(code, severity, message, hits.count, hits.leads[:MAX_LEAD_DETAILS])]


def _parts(variant: Mapping[str, Any], templates: Mapping[str, TemplateFact | None]) -> list[str]:
    """The texts of a variant that get rendered (subject, text, html)."""
    template_id = variant.get("template_id")
    if template_id:
        found = templates.get(template_id)
        if found is None:
            return []
        parts = [found.subject, found.text, found.html]
    else:
        parts = [variant.get("subject"), variant.get("text"), variant.get("html")]
    return [p for p in parts if isinstance(p, str)]


def _sending(facts: Facts) -> list[Finding]:
    out: list[Finding] = []
    if facts.verified_domains == 0:
        out.append(Finding("no_verified_domain", "blocking", "No sending domain is verified yet."))
    if not facts.aliases:
        out.append(Finding("no_sender", "blocking", "The campaign names no sending alias."))
    for alias in facts.aliases:
        if alias.address is None:
            out.append(Finding("unknown_alias", "blocking", f"No sending alias {alias.id!r}."))
        elif alias.domain_status != "verified":
            out.append(
                Finding(
                    "alias_domain_unverified",
                    "blocking",
                    f"The domain of {alias.address} is not verified.",
                )
            )
    if not has_window(facts.schedule):
        out.append(
            Finding("no_sending_window", "blocking", "The schedule has no day or hour to send in.")
        )
    return out


def _content(facts: Facts) -> list[Finding]:
    if not facts.steps:
        return [Finding("no_steps", "blocking", "The campaign has no steps.")]
    out: list[Finding] = []
    missing_templates = sorted(
        {
            str(v["template_id"])
            for variants in facts.steps
            for v in variants
            if v.get("template_id") and facts.templates.get(v["template_id"]) is None
        }
    )
    for template_id in missing_templates:
        out.append(
            Finding("template_not_found", "blocking", f"No template {template_id!r} any more.")
        )
    return out


def texts(
    steps: Sequence[Sequence[Mapping[str, Any]]], templates: Mapping[str, TemplateFact | None]
) -> list[str]:
    """Every template part the steps render, in order."""
    return [
        part for variants in steps for variant in variants for part in _parts(variant, templates)
    ]


def required(parts: Sequence[str]) -> list[str]:
    """The variable names some part uses without a fallback (first-seen order, each once)."""
    names: dict[str, None] = {}
    for part in parts:
        names.update(dict.fromkeys(t.name for t in tr.scan(part)[0] if t.fallback is None))
    return list(names)


def missing_detail(parts: Sequence[str], data: Mapping[str, Any]) -> str:
    """The names a lead's row leaves unfilled in ``parts``, joined ("" when none)."""
    names: dict[str, None] = {}
    for part in parts:
        names.update(dict.fromkeys(tr.render(part, data).missing))
    return ", ".join(names)


def _leads(facts: Facts) -> list[Finding]:
    if not facts.open_leads:
        return [Finding("no_leads", "blocking", "The campaign has no leads waiting to start.")]
    return [
        *_per_lead(
            "missing_variables",
            "blocking",
            "Leads without a value for a template variable that has no fallback.",
            facts.missing,
        ),
        *_per_lead(
            "invalid_addresses", "blocking", "Leads whose address is invalid.", facts.invalid
        ),
        *_per_lead(
            "suppressed_leads",
            "warning",
            "Suppressed leads: they will be skipped at send time.",
            facts.suppressed,
        ),
        *_per_lead("risky_addresses", "warning", "Leads whose address is risky.", facts.risky),
    ]


def check(facts: Facts) -> list[Finding]:
    """Every finding, blocking ones first (stable order within each severity)."""
    found = [*_content(facts), *_sending(facts), *_leads(facts)]
    return sorted(found, key=lambda f: f.severity != "blocking")


def blocking(findings: Sequence[Finding]) -> list[Finding]:
    """The findings that refuse a launch."""
    return [f for f in findings if f.severity == "blocking"]
