"""The campaign read side: ``stats``, ``stats/step-performance``, ``click-stats``, a lead's event
timeline and ``aggregate-stats``, all computed from stored rows (:mod:`server.campaigns.stats`
says what each number means; "delivered" is sent and not reported bounced)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from server.campaigns.stats import Counts, StepCounts, aggregate, campaign_total, rates, steps_of
from server.campaigns.stats_store import CampaignRef, CampaignSelection, StatsStore, TimelineEvent
from server.db.models import CAMPAIGN_STATES
from server.errors import InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import page_of, page_request
from server.resources._common import json_response, path_id

__all__ = [
    "STATUSES",
    "AggregateStats",
    "CampaignStats",
    "ClickStats",
    "CountsView",
    "LeadEventList",
    "RatesView",
    "StepPerformance",
    "aggregate_stats",
    "campaign_stats",
    "click_stats",
    "lead_events",
    "step_performance",
]

STATUSES = tuple(s.strip().strip("'") for s in CAMPAIGN_STATES.split(","))
"""Campaign statuses (the aggregate's ``status`` filter)."""


class RatesView(BaseModel):
    """Ratios (0.0-1.0): delivered and bounce rates over sent; the others over delivered."""

    delivered_rate: float
    bounce_rate: float
    open_rate: float
    click_rate: float
    reply_rate: float
    unsubscribe_rate: float

    @classmethod
    def of(cls, counts: Counts) -> RatesView:
        """The rates of ``counts``."""
        return cls(**rates(counts).__dict__)


class CountsView(BaseModel):
    """Counted sends (``opens``/``clicks`` and the machine counts are events)."""

    scheduled: int
    queued: int
    in_flight: int
    sent: int
    delivered: int
    failed: int
    cancelled: int
    bounced: int
    hard_bounced: int
    deferred: int
    opened: int
    clicked: int
    replied: int
    unsubscribed: int
    opens: int
    machine_opens: int
    clicks: int
    machine_clicks: int

    @classmethod
    def of(cls, counts: Counts) -> CountsView:
        """From the pure counts."""
        return cls(**counts.as_dict())


class CampaignStats(CountsView):
    """A campaign's totals, rates and its leads by status."""

    campaign_id: str
    name: str
    status: str
    rates: RatesView
    leads: dict[str, int]


class VariantPerformance(CountsView):
    """One variant of a step."""

    label: str
    rates: RatesView


class StepView(CountsView):
    """One step: the sum of its variants."""

    position: int
    rates: RatesView
    variants: list[VariantPerformance]


class StepPerformance(BaseModel):
    """Per step and variant; ``unattributed`` holds lead events naming no send, so the steps
    plus ``unattributed`` equal ``totals``."""

    campaign_id: str
    steps: list[StepView]
    unattributed: CountsView
    totals: CountsView


class LinkView(BaseModel):
    """A link URL: clicks by people, leads who clicked (unique), machine clicks, messages."""

    url: str
    clicks: int
    unique_clicks: int
    machine_clicks: int
    messages: int


class ClickStats(BaseModel):
    """A campaign's links, most clicked first, with the campaign's click totals."""

    campaign_id: str
    data: list[LinkView]
    clicks: int
    machine_clicks: int
    clicked: int


class LeadEvent(BaseModel):
    """One entry of a lead's timeline (``detail``: actor and URL of a click, bounce status,
    error code, ...; never a message body)."""

    id: str
    at: float
    timestamp: str
    kind: str
    position: int | None
    variant: str | None
    email_id: str | None
    detail: dict[str, Any]


class LeadEventList(BaseModel):
    """A page of the lead's timeline, oldest first."""

    campaign_id: str
    campaign_lead_id: str
    data: list[LeadEvent]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class AggregateStats(CountsView):
    """The sum over the caller's campaigns the filters pick."""

    campaigns: int
    status: str | None
    start_date: str | None
    end_date: str | None
    rates: RatesView


def _store(ctx: KeyedContext) -> StatsStore:
    return StatsStore(ctx.services.db.engine)


async def _campaign(request: Request, ctx: KeyedContext) -> CampaignRef:
    campaign_id = path_id(request, "campaign_id", "cmp", "campaign")
    found = await _store(ctx).campaign(ctx.user_id, campaign_id)
    if found is None:
        raise NotFound("campaign_not_found", f"No campaign {campaign_id!r}.")
    return found


async def _steps(ctx: KeyedContext, ref: CampaignRef) -> tuple[list[StepCounts], Counts]:
    per_campaign, loose = await _store(ctx).counts(ctx.user_id, [ref.id])
    rows = dict(per_campaign.get(ref.id, {}))
    for position, labels in ref.variants.items():  # configured variants show with zeros
        for label in labels:
            rows.setdefault((position, label), Counts())
    return steps_of(rows, ref.variants), loose.get(ref.id, Counts())


async def campaign_stats(request: Request, ctx: KeyedContext) -> Response:
    """The campaign's totals (sent, delivered, bounced, opened by people, clicked, replied,
    unsubscribed, ...), rates, and leads by status."""
    ref = await _campaign(request, ctx)
    steps, loose = await _steps(ctx, ref)
    total = campaign_total(steps, loose)
    leads = await _store(ctx).lead_statuses(ref.id)
    leads["total"] = sum(n for k, n in leads.items() if not k.startswith("stopped_"))
    return json_response(
        CampaignStats(
            **total.as_dict(),
            campaign_id=ref.id,
            name=ref.name,
            status=ref.status,
            rates=RatesView.of(total),
            leads=leads,
        )
    )


async def step_performance(request: Request, ctx: KeyedContext) -> Response:
    """Counts and rates per step and per variant."""
    ref = await _campaign(request, ctx)
    steps, loose = await _steps(ctx, ref)
    views = [
        StepView(
            **step.total.as_dict(),
            position=step.position,
            rates=RatesView.of(step.total),
            variants=[
                VariantPerformance(**c.as_dict(), label=label, rates=RatesView.of(c))
                for label, c in step.variants
            ],
        )
        for step in steps
    ]
    return json_response(
        StepPerformance(
            campaign_id=ref.id,
            steps=views,
            unattributed=CountsView.of(loose),
            totals=CountsView.of(campaign_total(steps, loose)),
        )
    )


async def click_stats(request: Request, ctx: KeyedContext) -> Response:
    """Per link URL of the campaign's messages: clicks by people, unique clicks (leads),
    machine clicks."""
    ref = await _campaign(request, ctx)
    links = await _store(ctx).link_clicks(ref.id)
    steps, loose = await _steps(ctx, ref)
    total = campaign_total(steps, loose)
    return json_response(
        ClickStats(
            campaign_id=ref.id,
            data=[LinkView(**link.__dict__) for link in links],
            clicks=total.clicks,
            machine_clicks=total.machine_clicks,
            clicked=total.clicked,
        )
    )


def _event_view(event: TimelineEvent) -> LeadEvent:
    stamp = datetime.fromtimestamp(event.at, tz=UTC).isoformat().replace("+00:00", "Z")
    return LeadEvent(**event.__dict__, timestamp=stamp)


async def lead_events(request: Request, ctx: KeyedContext) -> Response:
    """The lead's timeline from every source (outbox, bounces, tracking, lead events), oldest
    first; ``cursor`` continues after the last entry of a page."""
    ref = await _campaign(request, ctx)
    lead_id = path_id(request, "campaign_lead_id", "cld", "campaign_lead")
    page = page_request(request.query_params)
    store = _store(ctx)
    if not await store.lead_exists(ref.id, lead_id):
        raise NotFound("campaign_lead_not_found", f"No lead {lead_id!r} in this campaign.")
    events = await store.timeline(lead_id)
    if page.after is not None:
        events = [e for e in events if e.id > page.after]
    sliced = page_of(events[page.offset : page.offset + page.limit + 1], page, lambda e: e.id)
    return json_response(
        LeadEventList(
            campaign_id=ref.id,
            campaign_lead_id=lead_id,
            data=[_event_view(e) for e in sliced.data],
            has_more=sliced.has_more,
            next_cursor=sliced.next_cursor,
            limit=page.limit,
            offset=page.offset,
        )
    )


def _date(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid {name}: a date as YYYY-MM-DD.", param=name
        ) from None


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


async def aggregate_stats(request: Request, ctx: KeyedContext) -> Response:
    """The sum over the caller's campaigns, optionally only those with ``status`` and created
    from ``start_date`` through ``end_date`` (UTC days, both inclusive)."""
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest("parameter_invalid", "Unknown campaign status.", param="status")
    start = _date(request, "start_date")
    end = _date(request, "end_date")
    selection = CampaignSelection(
        status=status,
        created_from=_epoch(start) if start else None,
        created_to=_epoch(end + timedelta(days=1)) if end and end < date.max else None,
    )
    store = _store(ctx)
    chosen = await store.campaigns(ctx.user_id, selection)
    per_campaign, loose = await store.counts(ctx.user_id, selection=selection)
    totals = aggregate(
        campaign_total(steps_of(per_campaign.get(ref.id, {})), loose.get(ref.id, Counts()))
        for ref in chosen
    )
    return json_response(
        AggregateStats(
            **totals.as_dict(),
            campaigns=len(chosen),
            status=status,
            start_date=start.isoformat() if start else None,
            end_date=end.isoformat() if end else None,
            rates=RatesView.of(totals),
        )
    )
