"""Gather the facts launch checks need (no network): counts and the first few leads of each
lead-level check from the store's aggregate queries (:mod:`server.campaigns.preflight_store`),
suppressions matched per domain in one batched lookup, the templates the steps use and the
sending aliases with their domains' status. The only write: leads stored without their derived
columns get them (emailintel's offline verdict, variable tokens) before counting."""

from __future__ import annotations

from collections.abc import Sequence

from emailintel.models import Reason, Verdict
from emailintel.verify import Validator
from server.campaigns import lead_index as li
from server.campaigns import preflight as pf
from server.campaigns.preflight_store import LeadRow, PreflightStore
from server.campaigns.store import CampaignRecord
from server.mail.store import MAX_DOMAINS
from server.services import Services
from server.suppression.normalise import lookup_keys
from server.suppression.store import SuppressionStore
from server.templates.store import TemplateStore

__all__ = ["OPEN_LEADS", "RISKY_REASONS", "gather", "offline_verdict", "suppressed_hits"]

OPEN_LEADS = ("pending", "active", "waiting_approval")
"""Leads still to send to: the ones launch starts, and the ones already on their way."""

RISKY_REASONS = frozenset(
    {Reason.DISPOSABLE, Reason.ROLE_ACCOUNT, Reason.TYPO_SUSPECTED, Reason.GIBBERISH_LOCAL_PART}
)
"""Offline reasons that make an address risky to mail (without DNS the verdict says unknown)."""

_OFFLINE = Validator(check_dns=False)


def _validator(svc: Services) -> Validator:
    validator = svc.validator
    return validator if isinstance(validator, Validator) else _OFFLINE


def offline_verdict(validator: Validator, address: str) -> tuple[str, list[str]]:
    """("invalid" | "risky" | "ok", reasons) from emailintel's syntax and list checks only."""
    result = validator.validate_offline(address)
    if result.verdict == Verdict.INVALID:
        return "invalid", [str(r) for r in result.reasons]
    risky = [str(r) for r in result.reasons if r in RISKY_REASONS]
    return ("risky", risky) if risky else ("ok", [])


def _derive(validator: Validator, rows: Sequence[LeadRow]) -> list[li.LeadIndex]:
    return [li.index(email, data, offline_verdict(validator, email)) for _, email, data in rows]


async def suppressed_hits(svc: Services, user_id: str, store: PreflightStore) -> pf.Hits:
    """Leads suppressed by their own address or by their domain or a parent of it: counted
    per domain in SQL, domains matched to entries by one batched lookup."""
    kinds = await store.suppression_kinds(user_id)
    barred: list[str] = []
    count = 0
    if "domain" in kinds:
        domains = await store.domains()
        chains = {d: lookup_keys("x@" + d)[1:] for d in domains}
        entries = await SuppressionStore(svc.db.engine).matching(
            user_id, {key for chain in chains.values() for key in chain}
        )
        barred = sorted(d for d, chain in chains.items() if any(k in entries for k in chain))
        count = sum(domains[d] for d in barred)
    if "email" in kinds:
        by_address = await store.suppressed_by_address(user_id)
        count += sum(n for d, n in by_address.items() if d not in set(barred))
    if not count:
        return pf.Hits()
    first = await store.first_suppressed(user_id, barred, pf.MAX_LEAD_DETAILS)
    found = await SuppressionStore(svc.db.engine).is_suppressed(user_id, [e for _, e in first])
    return pf.Hits(
        count,
        tuple(
            pf.LeadDetail(lead_id, email, f"suppressed by {entry.value}")
            for lead_id, email in first
            if (entry := found.get(email)) is not None
        ),
    )


async def _lead_hits(
    store: PreflightStore, validator: Validator, parts: list[str]
) -> tuple[int, pf.Hits, pf.Hits, pf.Hits]:
    """(open leads, missing, invalid, risky): one counting pass, then the first few of each."""
    names = pf.required(parts)
    summary = await store.summary(names)
    if summary.unfilled:
        await store.fill(lambda rows: _derive(validator, rows))
        summary = await store.summary(names)
    cap = pf.MAX_LEAD_DETAILS
    missing = pf.Hits(
        summary.lacking,
        tuple(
            pf.LeadDetail(i, e, pf.missing_detail(parts, data))
            for i, e, data in (await store.first_lacking(names, cap) if summary.lacking else [])
        ),
    )
    verdicts = []
    for verdict, count in (("invalid", summary.invalid), ("risky", summary.risky)):
        first = await store.first_with_verdict(verdict, cap) if count else []
        verdicts.append(pf.Hits(count, tuple(pf.LeadDetail(*row) for row in first)))
    return summary.total, missing, verdicts[0], verdicts[1]


async def gather(svc: Services, user_id: str, campaign: CampaignRecord) -> pf.Facts:
    """The facts about ``campaign`` as stored now (leads counted in SQL; any lead whose derived
    columns are missing gets them first)."""
    engine = svc.db.engine
    leads = PreflightStore(engine, campaign.id, OPEN_LEADS)
    templates: dict[str, pf.TemplateFact | None] = {}
    store = TemplateStore(engine)
    for step in campaign.steps:
        for variant in step.variants:
            template_id = variant.get("template_id")
            if template_id and template_id not in templates:
                got = await store.get(user_id, template_id)
                templates[template_id] = (
                    None
                    if got is None
                    else pf.TemplateFact(got.subject, got.body_text, got.body_html)
                )
    mail = svc.mail
    aliases = []
    for alias_id in campaign.sender_alias_ids:
        alias = await mail.alias(user_id, alias_id)
        domain = None if alias is None else await mail.domain(user_id, alias.domain_id)
        aliases.append(
            pf.AliasFact(
                alias_id,
                None if alias is None else alias.address,
                None if domain is None else domain.status,
            )
        )
    domains = await mail.domains(user_id, limit=MAX_DOMAINS)
    steps = [step.variants for step in campaign.steps]
    total, missing, invalid, risky = await _lead_hits(
        leads, _validator(svc), pf.texts(steps, templates)
    )
    return pf.Facts(
        steps=steps,
        schedule=campaign.schedule,
        aliases=aliases,
        verified_domains=sum(d.status == "verified" for d in domains),
        open_leads=total,
        missing=missing,
        invalid=invalid,
        suppressed=await suppressed_hits(svc, user_id, leads),
        risky=risky,
        templates=templates,
    )
