"""The campaign sequencer: one :meth:`Sequencer.tick` turns due leads of sending campaigns into
outbox messages, exactly once per (lead, step), and :class:`SequencerLoop` runs ticks beside
the mail worker.

Per campaign and tick: re-evaluate the system holds (lifting cleared ones), skip it while held
or outside its sending window, then for each due lead: stop it if its address is suppressed
(unsubscribes are suppression entries), pick its sticky alias (or the least used one with room
under its daily cap and past its minimum gap), render the step (or take the approved draft, or
park the lead for approval), build and sign the message through :class:`MailService.prepare`
and claim-and-queue it in one transaction (:mod:`server.campaigns.sequencer_store`).
All time comes from the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from server.background import BackgroundLoop
from server.campaigns import holds as holds_rules
from server.campaigns.content import (
    Content,
    ContentError,
    TemplateParts,
    render_step,
    with_unsubscribe,
)
from server.campaigns.schedule import (
    Schedule,
    ScheduleError,
    cap_left,
    local_day_start,
    next_send_time,
    parse_schedule,
    window_open,
)
from server.campaigns.sequencer_store import (
    AliasRow,
    CampaignRow,
    Claim,
    ClaimCaps,
    LeadRow,
    SequencerStore,
    stop_lead,
)
from server.campaigns.store import StepRecord
from server.campaigns.unsubscribe import unsubscribe_url
from server.campaigns.variants import pick
from server.db.engine import Database
from server.db.tx import write_transaction
from server.mail.inbound_smtp import InboundConfig
from server.mail.message import Draft, MessageError
from server.mail.ports import IdentityLookup, SenderNotAllowed, SendingIdentityView
from server.mail.service import CapReached, MailService

if TYPE_CHECKING:
    from server.services import Services

__all__ = ["Sequencer", "SequencerLoop", "TickReport", "sequencer_loop"]

log = logging.getLogger(__name__)

_BOUNCE_LOCAL = InboundConfig().bounce_local_part
"""Campaign messages' return path is the sending domain's bounce address: delivery reports
then reach the inbound bounce pipeline (mail_bounces, suppression, the lead's stop)."""


@dataclass
class TickReport:
    """What one tick did (counts)."""

    decisions: int = 0
    queued: int = 0
    lost: int = 0
    stopped: int = 0
    failed: int = 0
    parked: int = 0
    completed: int = 0
    held: int = 0


@dataclass
class _Usage:
    """An alias's sends today and last send, kept current within a tick."""

    today: int
    last: float | None


@dataclass
class Sequencer:
    """Ticks over every sending campaign of one database."""

    db: Database
    mail: MailService
    base_url: str
    """The deployment's public https address (unsubscribe links)."""
    key: bytes
    """The tracking token key (unsubscribe tokens)."""
    clock: Callable[[], float] = time.time
    thresholds: holds_rules.Thresholds = field(default_factory=holds_rules.Thresholds)
    batch: int = 500
    """Due leads read per campaign per tick."""
    group: int = 50
    """Claims committed per transaction (each in its own savepoint)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith("https://"):
            raise ValueError("the sequencer needs an https public URL for unsubscribe links")
        self.store = SequencerStore(self.db.engine)

    async def tick(self) -> TickReport:
        """One pass over the sending campaigns."""
        report = TickReport()
        service = self.mail
        # Sending identities (a DKIM key unsealed per lookup) are looked up once per tick.
        self.mail = replace(service, identity=_cached(service.identity))
        try:
            for campaign in await self.store.sending_campaigns():
                try:
                    await self._campaign(campaign, report)
                except Exception:
                    log.exception("campaign %s: tick failed", campaign.id)
        finally:
            self.mail = service
        return report

    async def _campaign(self, campaign: CampaignRow, report: TickReport) -> None:
        now = self.clock()
        try:
            schedule: Schedule | None = parse_schedule(campaign.schedule)
        except ScheduleError:
            schedule = None
        day_start = local_day_start(schedule, now) if schedule else now - 86400.0
        aliases = await self.store.aliases(campaign.user_id, campaign.sender_alias_ids)
        total, today, bounces = await self.store.campaign_counts(campaign.id, day_start)
        facts = holds_rules.Facts(
            failing_domains=tuple(sorted({a.domain for a in aliases.values() if not a.verified})),
            sends=total,
            bounces=bounces,
            sent_today=today,
            daily_cap=campaign.daily_cap,
        )
        found = holds_rules.evaluate(facts, self.thresholds)
        if [h.code for h in found] != [h.get("code") for h in campaign.holds]:
            await self.store.set_holds(
                campaign.id, holds_rules.merge(campaign.holds, found, now), now
            )
        if found:
            report.held += 1
            return
        if schedule is None or not window_open(schedule, now):
            return
        steps = await self.store.steps(campaign.id)
        leads = await self.store.due_leads(campaign.id, now, self.batch)
        if not leads:
            if await self.store.complete_if_done(campaign.id, now):
                report.completed += 1
            return
        usable = {k: a for k, a in aliases.items() if a.verified}
        usage = {
            k: _Usage(n, last)
            for k, (n, last) in (await self.store.alias_usage(list(usable), day_start)).items()
        }
        suppressed = await self.mail.suppression(campaign.user_id, [lead.email for lead in leads])
        left = cap_left(campaign.daily_cap, today)
        templates: dict[str, TemplateParts | None] = {}
        pending: list[Claim] = []
        for lead in leads:
            if left is not None and left <= 0:
                break
            report.decisions += 1
            now = self.clock()
            if lead.email in suppressed:
                async with write_transaction(self.db.engine) as conn:
                    stopped = await stop_lead(
                        conn,
                        lead.id,
                        lead.campaign_id,
                        reason="suppressed",
                        now=now,
                        position=lead.next_position,
                        detail={"reason": str(suppressed[lead.email])[:200]},
                    )
                if stopped:
                    report.stopped += 1
                continue
            step = steps.get(lead.next_position)
            if step is None:
                await self.store.fail(lead, "no_step", f"no step {lead.next_position}", now)
                report.failed += 1
                continue
            alias = self._alias(campaign, schedule, lead, usable, usage, now)
            if alias is None:
                continue
            content = await self._content(campaign, lead, step, templates, report, now)
            if content is None:
                continue
            claim = await self._build(campaign, lead, steps, alias, content, now, report, day_start)
            if claim is not None:  # counted as sent now: a lost claim only errs on the safe side
                pending.append(claim)
                used = usage.setdefault(alias.id, _Usage(0, None))
                used.today += 1
                used.last = now
                if left is not None:
                    left -= 1
            if len(pending) >= self.group:
                await self._flush(pending, report)
        await self._flush(pending, report)
        if len(leads) < self.batch and await self.store.complete_if_done(campaign.id, now):
            report.completed += 1

    def _alias(
        self,
        campaign: CampaignRow,
        schedule: Schedule,
        lead: LeadRow,
        usable: Mapping[str, AliasRow],
        usage: dict[str, _Usage],
        now: float,
    ) -> AliasRow | None:
        """The lead's sticky alias if it may send now; a new lead takes the least used alias
        that may (under its daily cap, past its gap); None: wait."""
        if lead.alias_id is not None and lead.alias_id in usable:
            candidates = [usable[lead.alias_id]]
        else:
            candidates = sorted(
                usable.values(),
                key=lambda a: (usage.get(a.id, _Usage(0, None)).today, a.id),
            )
        for alias in candidates:
            used = usage.get(alias.id, _Usage(0, None))
            room = cap_left(campaign.alias_daily_cap, used.today)
            if room is not None and room <= 0:
                continue
            at = next_send_time(schedule, now, alias.id, used.last)
            if at is not None and at <= now:
                return alias
        return None

    async def _template(
        self, user_id: str, template_id: str, cache: dict[str, TemplateParts | None]
    ) -> TemplateParts | None:
        if template_id not in cache:
            from server.templates.store import TemplateStore

            found = await TemplateStore(self.db.engine).get(user_id, template_id[:64])
            cache[template_id] = (
                TemplateParts(found.subject, found.body_text or None, found.body_html)
                if found is not None
                else None
            )
        return cache[template_id]

    async def _render(
        self,
        campaign: CampaignRow,
        lead: LeadRow,
        step: StepRecord,
        templates: dict[str, TemplateParts | None],
    ) -> Content:
        variant = pick(lead.id, step.position, step.variants)
        template_id = variant.get("template_id")
        template = None
        if isinstance(template_id, str) and template_id:
            template = await self._template(campaign.user_id, template_id, templates)
        row = {**lead.data, "email": lead.email}
        return render_step(variant, row, template)

    async def _content(
        self,
        campaign: CampaignRow,
        lead: LeadRow,
        step: StepRecord,
        templates: dict[str, TemplateParts | None],
        report: TickReport,
        now: float,
    ) -> Content | None:
        """The content to send, or None (the lead failed or now waits for approval)."""
        try:
            if not campaign.requires_approval:
                return await self._render(campaign, lead, step, templates)
            draft = await self.store.draft(lead.id, step.position)
            if draft is not None and draft.state == "approved":
                return Content(draft.variant, draft.subject, draft.text, draft.html)
            if draft is not None:
                await self.store.park(lead.id, step.position, now)
            else:
                rendered = await self._render(campaign, lead, step, templates)
                await self.store.save_draft(
                    lead,
                    step.position,
                    rendered.variant,
                    (rendered.subject, rendered.text, rendered.html),
                    now,
                )
            report.parked += 1
            return None
        except (ContentError, ValueError) as exc:
            code = exc.code if isinstance(exc, ContentError) else "bad_step"
            await self.store.fail(lead, code, str(exc), now)
            report.failed += 1
            return None

    async def _build(
        self,
        campaign: CampaignRow,
        lead: LeadRow,
        steps: Mapping[int, StepRecord],
        alias: AliasRow,
        content: Content,
        now: float,
        report: TickReport,
        day_start: float,
    ) -> Claim | None:
        """Build and sign the lead's message: the claim to make (with the campaign's caps for
        the day from ``day_start``), or None (try again later, or the lead failed)."""
        url = unsubscribe_url(self.base_url, self.key, lead.id)
        content = with_unsubscribe(content, url)
        headers: dict[str, str] = {}
        if lead.thread_message_id:
            headers = {"In-Reply-To": lead.thread_message_id, "References": lead.thread_message_id}
        draft = Draft(
            from_=alias.address,
            to=[lead.email],
            subject=content.subject,
            text=content.text,
            html=content.html,
            headers=headers,
            tags=("campaign",),
            list_unsubscribe=url,
        )
        try:
            prepared = await self.mail.prepare(
                campaign.user_id,
                draft,
                track_opens=campaign.track_opens,
                track_clicks=campaign.track_clicks,
                envelope_from=f"{_BOUNCE_LOCAL}@{alias.domain}",
            )
        except (CapReached, SenderNotAllowed):
            return None  # the mail platform's own caps or a domain gone bad: try next tick
        except MessageError as exc:
            await self.store.fail(lead, "message_error", exc.message, now)
            report.failed += 1
            return None
        following = steps.get(lead.next_position + 1)
        return Claim(
            lead=lead,
            variant=content.variant,
            alias_id=alias.id,
            row=prepared.row,
            links=prepared.links,
            next_due=now + following.delay_seconds if following is not None else None,
            now=now,
            caps=ClaimCaps(campaign.daily_cap, campaign.alias_daily_cap, day_start),
        )

    async def _flush(self, pending: list[Claim], report: TickReport) -> None:
        """Claim-and-queue the built messages (one transaction) and empty ``pending``."""
        if not pending:
            return
        results = await self.store.claim_and_queue(self.mail.outbox, pending, self.mail.caps)
        report.queued += sum(results)
        report.lost += len(results) - sum(results)
        pending.clear()


def _cached(lookup: IdentityLookup) -> IdentityLookup:
    """``lookup`` remembering its answers (and refusals) for the life of the wrapper."""
    known: dict[tuple[str, str], SendingIdentityView | SenderNotAllowed] = {}

    async def cached(user_id: str, from_address: str) -> SendingIdentityView:
        key = (user_id, from_address)
        if key not in known:
            try:
                known[key] = await lookup(user_id, from_address)
            except SenderNotAllowed as exc:
                known[key] = exc
        found = known[key]
        if isinstance(found, SenderNotAllowed):
            raise found
        return found

    return cached


class SequencerLoop(BackgroundLoop):
    """Runs :meth:`Sequencer.tick` every ``poll_seconds`` until stopped."""

    def __init__(self, sequencer: Sequencer, poll_seconds: float = 5.0) -> None:
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be > 0")
        self.sequencer = sequencer
        self.poll_seconds = poll_seconds
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Tick, then wait for the next poll or :meth:`stop`."""
        while not self._stop.is_set():
            try:
                await self.sequencer.tick()
            except Exception:  # a database hiccup must not end the loop
                log.exception("campaign sequencer tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_seconds)

    def stop(self) -> None:
        """Finish the current tick and return."""
        self._stop.set()


def sequencer_loop(svc: Services) -> SequencerLoop | None:
    """The deployment's sequencer loop on its sending service, or None when campaigns cannot
    send here (switched off, or no https public URL for the unsubscribe links)."""
    settings = svc.settings
    base = settings.public_url or ""
    if not settings.campaign_sequencer or not base.startswith("https://"):
        if settings.campaign_sequencer:
            log.warning("campaign sequencer off: BAVLIO_PUBLIC_URL is not an https URL")
        return None
    thresholds = holds_rules.Thresholds(
        bounce_rate=settings.campaign_hold_bounce_rate,
        min_sends=settings.campaign_hold_min_sends,
    )
    sequencer = Sequencer(
        svc.db, svc.sending, base_url=base, key=svc.keyed.tracking_key, thresholds=thresholds
    )
    return SequencerLoop(sequencer, settings.campaign_poll_seconds)
