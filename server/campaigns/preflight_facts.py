"""Gather the facts launch checks need (reads only, no network): the campaign's open leads, their
suppressions (one batched lookup), emailintel's offline verdict per address, the templates the
steps use and the sending aliases with their domains' status."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from emailintel.models import Reason, Verdict
from emailintel.verify import Validator
from server.campaigns import preflight as pf
from server.campaigns.lead_store import LeadStore
from server.campaigns.store import CampaignRecord
from server.mail.store import MAX_DOMAINS
from server.services import Services
from server.suppression.store import SuppressionStore
from server.templates.store import TemplateStore

__all__ = ["OPEN_LEADS", "RISKY_REASONS", "gather", "offline_verdict"]

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


def _verdicts(validator: Validator, emails: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
    return {email: offline_verdict(validator, email) for email in emails}


async def gather(svc: Services, user_id: str, campaign: CampaignRecord) -> pf.Facts:
    """The facts about ``campaign`` as stored now."""
    engine = svc.db.engine
    leads = await LeadStore(engine).all(campaign.id, statuses=OPEN_LEADS)
    emails = sorted({lead.email for lead in leads})
    found = await SuppressionStore(engine).is_suppressed(user_id, emails)
    suppressed = {email: entry.value for email, entry in found.items() if entry is not None}
    validator = _validator(svc)
    verdicts = await asyncio.to_thread(_verdicts, validator, emails)  # CPU: off the loop
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
    return pf.Facts(
        steps=[step.variants for step in campaign.steps],
        schedule=campaign.schedule,
        aliases=aliases,
        verified_domains=sum(d.status == "verified" for d in domains),
        leads=[pf.LeadFact(lead.id, lead.email, lead.data) for lead in leads],
        suppressed=suppressed,
        verdicts=verdicts,
        templates=templates,
    )
