"""Look up, through emailintel's resolver, every answer the checker needs: the records' own
names and, for SPF, the include/redirect targets they reach (bounded, breadth first)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from emailintel.dns import DnsResolver
from emailintel.errors import EmailIntelError
from emailintel.models import RecordFacts
from server.mail.dns_check import Answer, Answers, spf_records, spf_targets
from server.mail.dns_records import DnsRecord

__all__ = ["MAX_SPF_FETCHES", "look_up"]

MAX_SPF_FETCHES = 16
"""Include targets fetched per check: enough to see past the 10-lookup limit, no more."""


async def _records(lookup: Callable[[str], Awaitable[RecordFacts]], name: str) -> Answer:
    """A TXT or CNAME lookup (``resolver.lookup_txt`` / ``lookup_cname``) as an answer."""
    try:
        facts = await lookup(name)
    except EmailIntelError:
        return Answer("error")
    return Answer(facts.status, facts.values)


async def _mx(resolver: DnsResolver, name: str) -> Answer:
    try:
        facts = await resolver.lookup_mx(name)
    except EmailIntelError:
        return Answer("error")
    if facts.status == "ok" and facts.fallback is None:
        return Answer("ok", tuple(mx.host for mx in facts.mx))
    if facts.status == "ok" or facts.status == "no_mx":
        return Answer("nodata")
    if facts.status == "null_mx":
        return Answer("ok", (".",))
    if facts.status in ("nxdomain", "timeout"):
        return Answer(facts.status)
    return Answer("error")


def _names(records: Iterable[DnsRecord], rdtype: str) -> list[str]:
    return sorted({r.name.lower() for r in records if r.type == rdtype})


async def look_up(resolver: DnsResolver, records: tuple[DnsRecord, ...]) -> Answers:
    """The answers for ``records`` (and the SPF includes they reach)."""
    txt_names = _names(records, "TXT")
    cname_names = _names(records, "CNAME")
    mx_names = _names(records, "MX")
    results = await asyncio.gather(
        *(_records(resolver.lookup_txt, n) for n in txt_names),
        *(_records(resolver.lookup_cname, n) for n in cname_names),
        *(_mx(resolver, n) for n in mx_names),
    )
    txt = dict(zip(txt_names, results[: len(txt_names)], strict=True))
    cname = dict(
        zip(cname_names, results[len(txt_names) : len(txt_names) + len(cname_names)], strict=True)
    )
    mx = dict(zip(mx_names, results[len(txt_names) + len(cname_names) :], strict=True))
    spf_names = {r.name.lower() for r in records if r.purpose in ("spf", "return_path_spf")}
    frontier = [name for name in sorted(spf_names)]
    fetched = 0
    while frontier and fetched < MAX_SPF_FETCHES:
        wanted: list[str] = []
        for name in frontier:
            answer = txt.get(name)
            if answer is None or answer.status != "ok":
                continue
            for record in spf_records(answer.values)[:1]:
                wanted.extend(t for t in spf_targets(record) if t not in txt and t not in wanted)
        wanted = wanted[: MAX_SPF_FETCHES - fetched]
        if not wanted:
            break
        answers = await asyncio.gather(*(_records(resolver.lookup_txt, n) for n in wanted))
        txt.update(zip(wanted, answers, strict=True))
        fetched += len(wanted)
        frontier = wanted
    return Answers(txt=txt, cname=cname, mx=mx)
