"""Compare the records a domain should publish with what DNS answered, record by record.

Pure and total: any answers give a status per record and never raise. Statuses:
``ok``, ``missing``, ``wrong_value``, ``extra_spf_record`` (two ``v=spf1`` records: permerror,
RFC 7208 §3.2), ``spf_too_many_lookups`` (over 10 DNS-querying terms or over 2 void lookups,
counted through the looked-up includes, RFC 7208 §4.6.4), ``dkim_key_mismatch``,
``dmarc_invalid``, and ``lookup_failed`` (DNS could not be asked: says nothing either way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from server.mail.dns_records import DnsRecord

__all__ = [
    "MAX_SPF_LOOKUPS",
    "MAX_SPF_VOID_LOOKUPS",
    "Answer",
    "AnswerStatus",
    "Answers",
    "DomainVerdict",
    "RecordCheck",
    "RecordStatus",
    "check_records",
    "dmarc_problem",
    "spf_lookups",
    "spf_records",
    "spf_targets",
    "verdict",
]

MAX_SPF_LOOKUPS = 10
MAX_SPF_VOID_LOOKUPS = 2
_MAX_DEPTH = 10
_SHOWN_VALUES = 8
_SHOWN_CHARS = 512

AnswerStatus = Literal["ok", "nxdomain", "nodata", "timeout", "error"]
RecordStatus = Literal[
    "ok", "missing", "wrong_value", "extra_spf_record", "spf_too_many_lookups",
    "dkim_key_mismatch", "dmarc_invalid", "lookup_failed",
]  # fmt: skip
DomainVerdict = Literal["verified", "not_verified", "lookup_failed"]

_LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
_TERM = re.compile(r"^([+\-~?]?)([a-z][a-z0-9_.-]*)([:=/].*)?$")
_DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})


@dataclass(frozen=True)
class Answer:
    """What DNS said for one (type, name): TXT values, CNAME targets or MX hosts."""

    status: AnswerStatus
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answers:
    """The looked-up facts, keyed by absolute lower-case name (no final dot). TXT holds the
    include targets of SPF records too; a name that was not looked up counts as a failed lookup."""

    txt: Mapping[str, Answer] = field(default_factory=dict)
    cname: Mapping[str, Answer] = field(default_factory=dict)
    mx: Mapping[str, Answer] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordCheck:
    """One expected record, what was found (bounded), its status and a short human detail."""

    record: DnsRecord
    status: RecordStatus
    found: tuple[str, ...] = ()
    detail: str | None = None


def _key(name: str) -> str:
    return name.strip().lower().removesuffix(".")


def _shown(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(v[:_SHOWN_CHARS] for v in list(values)[:_SHOWN_VALUES])


def spf_records(values: Iterable[str]) -> list[str]:
    """The values that are SPF records (``v=spf1`` alone or followed by a space)."""
    return [v for v in values if re.match(r"(?i)^\s*v=spf1(\s|$)", v)]


def _terms(record: str) -> list[tuple[str, str]]:
    """(mechanism or modifier name, argument) of each term after ``v=spf1``; unparsable terms
    are kept as ("?", text) so they never raise."""
    terms: list[tuple[str, str]] = []
    for token in record.split()[1:][:200]:
        match = _TERM.match(token.lower())
        if match is None:
            terms.append(("?", token))
            continue
        name, rest = match.group(2), match.group(3) or ""
        argument = rest[1:] if rest[:1] in (":", "=") else ""
        terms.append((name, argument))
    return terms


def spf_targets(record: str) -> list[str]:
    """The names an SPF record's ``include:`` and ``redirect=`` terms point at (without macros),
    i.e. the TXT lookups needed to count its DNS lookups."""
    return [
        _key(arg)
        for name, arg in _terms(record)
        if name in ("include", "redirect") and arg and "%" not in arg
    ]


def spf_lookups(record: str, txt: Mapping[str, Answer]) -> tuple[int, int]:
    """(DNS-querying terms, void lookups) of ``record`` and the includes it reaches in ``txt``.

    Counting stops once either limit is exceeded; an include loop counts as over the limit.
    """
    lookups = 0
    voids = 0

    def walk(spf: str, ancestors: tuple[str, ...]) -> None:
        nonlocal lookups, voids
        for name, argument in _terms(spf):
            if lookups > MAX_SPF_LOOKUPS or voids > MAX_SPF_VOID_LOOKUPS:
                return
            if name not in _LOOKUP_TERMS:
                continue
            lookups += 1
            if name not in ("include", "redirect") or not argument or "%" in argument:
                continue
            target = _key(argument)
            if target in ancestors or len(ancestors) >= _MAX_DEPTH:
                lookups = MAX_SPF_LOOKUPS + 1  # a loop (or absurd depth) never terminates
                return
            answer = txt.get(target)
            if answer is None:
                continue
            if answer.status in ("nxdomain", "nodata"):
                voids += 1
                continue
            found = spf_records(answer.values) if answer.status == "ok" else []
            if len(found) == 1:
                walk(found[0], (*ancestors, target))

    walk(record, ())
    return lookups, voids


def _failed(answer: Answer | None) -> bool:
    return answer is None or answer.status in ("timeout", "error")


def _absent(answer: Answer) -> bool:
    return answer.status in ("nxdomain", "nodata") or not answer.values


def _check_spf(record: DnsRecord, answers: Answers) -> RecordCheck:
    answer = answers.txt.get(_key(record.name))
    if answer is None or _failed(answer):
        return RecordCheck(record, "lookup_failed")
    found = spf_records(answer.values)
    if _absent(answer) or not found:
        return RecordCheck(record, "missing", _shown(found))
    if len(found) > 1:
        return RecordCheck(
            record, "extra_spf_record", _shown(found), "Publish one v=spf1 record; merge them."
        )
    published = {(name, arg) for name, arg in _terms(found[0])}
    wanted = [term for term in _terms(record.value) if term[0] not in ("all", "?")]
    lacking = [f"{n}:{a}" if a else n for n, a in wanted if (n, a) not in published]
    lookups, voids = spf_lookups(found[0], answers.txt)
    if lookups > MAX_SPF_LOOKUPS or voids > MAX_SPF_VOID_LOOKUPS:
        detail = (
            f"More than {MAX_SPF_LOOKUPS} DNS lookups"
            if lookups > MAX_SPF_LOOKUPS
            else f"More than {MAX_SPF_VOID_LOOKUPS} void lookups"
        )
        return RecordCheck(record, "spf_too_many_lookups", _shown(found), detail)
    if lacking:
        return RecordCheck(
            record, "wrong_value", _shown(found), "Missing " + ", ".join(lacking[:5]) + "."
        )
    return RecordCheck(record, "ok", _shown(found))


def _tags(value: str) -> dict[str, str] | None:
    """``k=v; …`` tags (lower-case names), or None when malformed or a tag repeats."""
    tags: dict[str, str] = {}
    for part in value.split(";")[:64]:
        part = part.strip()
        if not part:
            continue
        name, sep, tag_value = part.partition("=")
        name = name.strip().lower()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in tags:
            return None
        tags[name] = tag_value.strip()
    return tags


def _check_dkim(record: DnsRecord, answers: Answers) -> RecordCheck:
    answer = answers.txt.get(_key(record.name))
    if answer is None or _failed(answer):
        return RecordCheck(record, "lookup_failed")
    if _absent(answer):
        return RecordCheck(record, "missing")
    found = _shown(answer.values)
    expected = (_tags(record.value) or {}).get("p", "")
    keys = []
    for value in answer.values:
        tags = _tags(value)
        if tags is not None and "p" in tags:
            keys.append(re.sub(r"\s+", "", tags["p"]))
    if not keys:
        return RecordCheck(record, "wrong_value", found, "No DKIM key (p=) in the record.")
    if expected in keys:
        if len(answer.values) > 1:
            return RecordCheck(record, "wrong_value", found, "Publish exactly one record here.")
        return RecordCheck(record, "ok", found)
    return RecordCheck(record, "dkim_key_mismatch", found, "The published key is not ours.")


def dmarc_problem(value: str) -> str | None:
    """Why a ``v=DMARC1`` record is invalid, or None when it is valid."""
    tags = _tags(value)
    if tags is None:
        return "Malformed tags."
    if next(iter(tags), None) != "v" or tags["v"] != "DMARC1":
        return "The first tag must be v=DMARC1."
    if tags.get("p", "").lower() not in _DMARC_POLICIES:
        return "p= must be none, quarantine or reject."
    if "sp" in tags and tags["sp"].lower() not in _DMARC_POLICIES:
        return "sp= must be none, quarantine or reject."
    for name in ("adkim", "aspf"):
        if name in tags and tags[name].lower() not in ("r", "s"):
            return f"{name}= must be r or s."
    for name in ("rua", "ruf"):
        if name in tags:
            uris = [u.strip() for u in tags[name].split(",")]
            if not all(re.fullmatch(r"(?i)mailto:[^@\s]+@[^@\s]+", u) for u in uris):
                return f"{name}= must list mailto: addresses."
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        return "pct= must be 0-100."
    return None


def _check_dmarc(record: DnsRecord, answers: Answers) -> RecordCheck:
    answer = answers.txt.get(_key(record.name))
    if answer is None or _failed(answer):
        return RecordCheck(record, "lookup_failed")
    found = [v for v in answer.values if re.match(r"(?i)^\s*v\s*=\s*dmarc1", v)]
    if _absent(answer) or not found:
        return RecordCheck(record, "missing", _shown(found))
    if len(found) > 1:
        return RecordCheck(
            record, "dmarc_invalid", _shown(found), "Several DMARC records disable DMARC."
        )
    problem = dmarc_problem(found[0])
    if problem is not None:
        return RecordCheck(record, "dmarc_invalid", _shown(found), problem)
    return RecordCheck(record, "ok", _shown(found))


def _check_target(record: DnsRecord, table: Mapping[str, Answer]) -> RecordCheck:
    answer = table.get(_key(record.name))
    if answer is None or _failed(answer):
        return RecordCheck(record, "lookup_failed")
    if _absent(answer):
        return RecordCheck(record, "missing")
    found = _shown(answer.values)
    if _key(record.value) in {_key(v) for v in answer.values}:
        return RecordCheck(record, "ok", found)
    return RecordCheck(record, "wrong_value", found, f"Expected {record.value}.")


def _check(record: DnsRecord, answers: Answers) -> RecordCheck:
    if record.type == "CNAME":
        return _check_target(record, answers.cname)
    if record.type == "MX":
        return _check_target(record, answers.mx)
    if record.purpose in ("spf", "return_path_spf"):
        return _check_spf(record, answers)
    if record.purpose == "dmarc":
        return _check_dmarc(record, answers)
    return _check_dkim(record, answers)


def check_records(records: Iterable[DnsRecord], answers: Answers) -> tuple[RecordCheck, ...]:
    """One check per expected record (total: never raises on any answers)."""
    return tuple(_check(record, answers) for record in records)


def verdict(checks: Iterable[RecordCheck]) -> DomainVerdict:
    """``verified`` when every required record is ok; ``lookup_failed`` when a required one
    could not be looked up and none failed outright; else ``not_verified``."""
    required = [c for c in checks if c.record.required]
    if all(c.status == "ok" for c in required):
        return "verified"
    if all(c.status in ("ok", "lookup_failed") for c in required):
        return "lookup_failed"
    return "not_verified"
