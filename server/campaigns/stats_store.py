"""The SQL of the campaign read side: counted facts per (campaign, step, variant) from the stored
rows (``campaign_sends`` joined to the outbox, bounces, tracking events and lead events), the
per-link click table, and a lead's merged timeline. The sums and rates are :mod:`.stats`.

Every query starts from the caller's campaigns (``campaigns.user_id``), so another user's rows
are never read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.campaigns.stats import Counts
from server.db.models import (
    Campaign,
    CampaignEvent,
    CampaignLead,
    CampaignSend,
    CampaignStep,
    MailBounce,
    MailEvent,
    MailLink,
    MailMessage,
)
from server.db.tx import read_connection
from server.mail.tracking import HUMAN

__all__ = [
    "MAX_TIMELINE",
    "CampaignRef",
    "CampaignSelection",
    "LinkClicks",
    "StatsStore",
    "TimelineEvent",
]

MAX_TIMELINE: Final = 5000
"""Rows read per source for one lead's timeline (a lead has a few sends; this bounds opens)."""

_PEOPLE: Final = sorted(a.value for a in HUMAN)
_FAILED_BOUNCE: Final = ("hard", "soft", "policy")
_EVENT_KINDS: Final = ("replied", "unsubscribed")

S = CampaignSend.__table__.c
M = MailMessage.__table__.c
B = MailBounce.__table__.c
E = MailEvent.__table__.c
L = MailLink.__table__.c
CE = CampaignEvent.__table__.c
C = Campaign.__table__.c


@dataclass(frozen=True)
class CampaignRef:
    """A campaign of the caller: id, name, status and its steps' variant labels by position."""

    id: str
    name: str
    status: str
    created_at: float
    variants: Mapping[int, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CampaignSelection:
    """Which of the user's campaigns an aggregate covers (all fields optional)."""

    status: str | None = None
    created_from: float | None = None
    created_to: float | None = None


@dataclass(frozen=True)
class LinkClicks:
    """One link URL of a campaign's messages: clicks by people, the leads who clicked it (unique
    clicks), machine clicks, and the messages it was in."""

    url: str
    clicks: int
    unique_clicks: int
    machine_clicks: int
    messages: int


@dataclass(frozen=True)
class TimelineEvent:
    """One entry of a lead's timeline; ``id`` is stable and sorts by time (the cursor)."""

    id: str
    at: float
    kind: str
    position: int | None
    variant: str | None
    email_id: str | None
    detail: dict[str, Any]


def _flag(condition: Any) -> Any:
    return sa.case((condition, 1), else_=0)


def _send_facts(campaigns: Any) -> Any:
    """One row per send of ``campaigns`` (a subquery of campaign ids) with its facts as 0/1
    flags and event counts: tracking events and bounces are aggregated per message once, then
    joined (one pass over each table, not a subquery per send)."""
    emails = sa.select(S.email_id).where(S.campaign_id.in_(campaigns), S.email_id.is_not(None))
    person = E.actor.in_(_PEOPLE)
    events = (
        sa.select(
            E.email_id.label("email_id"),
            sa.func.sum(_flag(sa.and_(E.kind == "open", person))).label("opens"),
            sa.func.sum(_flag(sa.and_(E.kind == "open", sa.not_(person)))).label("m_opens"),
            sa.func.sum(_flag(sa.and_(E.kind == "click", person))).label("clicks"),
            sa.func.sum(_flag(sa.and_(E.kind == "click", sa.not_(person)))).label("m_clicks"),
        )
        .where(E.email_id.in_(emails))
        .group_by(E.email_id)
        .subquery()
    )
    failing = B.kind.in_(_FAILED_BOUNCE)
    delay = sa.and_(failing, B.status.is_not(None), B.status.like("4.%"))
    bounces = (
        sa.select(
            B.sent_message_id.label("email_id"),
            sa.func.max(_flag(sa.and_(failing, sa.not_(delay)))).label("failed"),
            sa.func.max(_flag(B.kind == "hard")).label("hard"),
            sa.func.max(_flag(delay)).label("delayed"),
        )
        .where(B.sent_message_id.in_(emails))
        .group_by(B.sent_message_id)
        .subquery()
    )
    sent = M.state == "sent"
    state = sa.func.coalesce(M.state, "failed")  # a send with no message: nothing went out
    bounced = sa.and_(sent, bounces.c.failed == 1)
    opens = sa.func.coalesce(events.c.opens, 0)
    clicks = sa.func.coalesce(events.c.clicks, 0)
    return (
        sa.select(
            S.campaign_id,
            S.position,
            S.variant,
            _flag(state == "queued").label("queued"),
            _flag(state == "sending").label("in_flight"),
            _flag(sent).label("sent"),
            _flag(state == "failed").label("failed"),
            _flag(state == "cancelled").label("cancelled"),
            _flag(bounced).label("bounced"),
            _flag(sa.and_(sent, bounces.c.hard == 1)).label("hard_bounced"),
            _flag(sa.and_(sent, sa.not_(bounced), bounces.c.delayed == 1)).label("deferred"),
            _flag(sa.and_(sent, opens > 0)).label("opened"),
            _flag(sa.and_(sent, clicks > 0)).label("clicked"),
            opens.label("opens"),
            sa.func.coalesce(events.c.m_opens, 0).label("machine_opens"),
            clicks.label("clicks"),
            sa.func.coalesce(events.c.m_clicks, 0).label("machine_clicks"),
        )
        .select_from(
            CampaignSend.__table__.outerjoin(MailMessage.__table__, M.id == S.email_id)
            .outerjoin(events, events.c.email_id == S.email_id)
            .outerjoin(bounces, bounces.c.email_id == S.email_id)
        )
        .where(S.campaign_id.in_(campaigns))
        .subquery()
    )


_SUMMED: Final = (
    "queued",
    "in_flight",
    "sent",
    "failed",
    "cancelled",
    "bounced",
    "hard_bounced",
    "deferred",
    "opened",
    "clicked",
    "opens",
    "machine_opens",
    "clicks",
    "machine_clicks",
)


def _attributed(campaigns: Any) -> Any:
    """Reply and unsubscribe events of ``campaigns`` with the step they answer: the send whose
    message the event names, else the send of the event's step, else the lead's last send
    before the event (NULL: the event names no send)."""
    by_email = (
        sa.select(S.position)
        .where(S.lead_id == CE.lead_id, S.email_id == CE.email_id)
        .limit(1)
        .scalar_subquery()
    )
    by_step = (
        sa.select(S.position)
        .where(S.lead_id == CE.lead_id, S.position == CE.position)
        .limit(1)
        .scalar_subquery()
    )
    before = (
        sa.select(sa.func.max(S.position))
        .where(S.lead_id == CE.lead_id, S.queued_at <= CE.at)
        .scalar_subquery()
    )
    return (
        sa.select(
            CE.campaign_id,
            CE.lead_id,
            CE.kind,
            sa.func.coalesce(by_email, by_step, before).label("position"),
        )
        .where(CE.campaign_id.in_(campaigns), CE.kind.in_(_EVENT_KINDS))
        .distinct()
        .subquery()
    )


class StatsStore:
    """Reads for the campaign stats routes (no writes)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def campaign(self, user_id: str, campaign_id: str) -> CampaignRef | None:
        """The user's campaign with its steps' variant labels, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(C.id, C.name, C.status, C.created_at).where(
                        C.id == campaign_id, C.user_id == user_id
                    )
                )
            ).first()
            if row is None:
                return None
            steps = await conn.execute(
                sa.select(CampaignStep.position, CampaignStep.variants).where(
                    CampaignStep.campaign_id == campaign_id
                )
            )
            variants = {int(p): _labels(v) for p, v in steps}
        return CampaignRef(row.id, row.name, row.status, float(row.created_at), variants)

    async def counts(
        self,
        user_id: str,
        campaign_ids: Sequence[str] | None = None,
        selection: CampaignSelection | None = None,
    ) -> tuple[dict[str, dict[tuple[int, str], Counts]], dict[str, Counts]]:
        """Counts per campaign and (position, variant), and each campaign's unattributed lead
        events, for the user's campaigns (``campaign_ids``, or those ``selection`` picks)."""
        campaigns = sa.select(C.id).where(C.user_id == user_id)
        if campaign_ids is not None:
            campaigns = campaigns.where(C.id.in_(list(campaign_ids)))
        if selection is not None:
            if selection.status is not None:
                campaigns = campaigns.where(C.status == selection.status)
            if selection.created_from is not None:
                campaigns = campaigns.where(C.created_at >= selection.created_from)
            if selection.created_to is not None:
                campaigns = campaigns.where(C.created_at < selection.created_to)
        facts = _send_facts(campaigns)
        per_variant = sa.select(
            facts.c.campaign_id,
            facts.c.position,
            facts.c.variant,
            *(sa.func.sum(facts.c[name]).label(name) for name in _SUMMED),
        ).group_by(facts.c.campaign_id, facts.c.position, facts.c.variant)
        events = _attributed(campaigns)
        attributed = (
            sa.select(
                events.c.campaign_id,
                events.c.position,
                S.variant,
                events.c.kind,
                sa.func.count().label("n"),
            )
            .select_from(
                events.outerjoin(
                    CampaignSend.__table__,
                    sa.and_(S.lead_id == events.c.lead_id, S.position == events.c.position),
                )
            )
            .group_by(events.c.campaign_id, events.c.position, S.variant, events.c.kind)
        )
        out: dict[str, dict[tuple[int, str], Counts]] = {}
        loose: dict[str, Counts] = {}
        async with read_connection(self.engine) as conn:
            if conn.dialect.name == "postgresql":  # one snapshot for both queries
                await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            for row in (await conn.execute(per_variant)).mappings():
                key = (int(row["position"]), str(row["variant"]))
                values = {name: int(row[name] or 0) for name in _SUMMED}
                out.setdefault(row["campaign_id"], {})[key] = Counts(**values)
            for row in (await conn.execute(attributed)).mappings():
                field_name = "replied" if row["kind"] == "replied" else "unsubscribed"
                extra = Counts(**{field_name: int(row["n"])})
                cid = row["campaign_id"]
                if row["position"] is None or row["variant"] is None:
                    loose[cid] = loose.get(cid, Counts()) + extra
                    continue
                key = (int(row["position"]), str(row["variant"]))
                held = out.setdefault(cid, {})
                held[key] = held.get(key, Counts()) + extra
        return out, loose

    async def campaigns(self, user_id: str, selection: CampaignSelection) -> list[CampaignRef]:
        """The user's campaigns ``selection`` picks (id, name, status; no steps), oldest first."""
        query = sa.select(C.id, C.name, C.status, C.created_at).where(C.user_id == user_id)
        if selection.status is not None:
            query = query.where(C.status == selection.status)
        if selection.created_from is not None:
            query = query.where(C.created_at >= selection.created_from)
        if selection.created_to is not None:
            query = query.where(C.created_at < selection.created_to)
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(query.order_by(C.id))
            return [CampaignRef(r.id, r.name, r.status, float(r.created_at)) for r in rows]

    async def link_clicks(self, campaign_id: str) -> list[LinkClicks]:
        """Per link URL of the campaign's messages (the caller checked the campaign is its
        own): clicks by people, leads who clicked, machine clicks, messages holding it."""
        human = sa.and_(E.id.is_not(None), E.actor.in_(_PEOPLE))
        machine = sa.and_(E.id.is_not(None), E.actor.not_in(_PEOPLE))
        query = (
            sa.select(
                L.url,
                sa.func.sum(_flag(human)).label("clicks"),
                sa.func.count(sa.distinct(sa.case((human, S.lead_id), else_=None))).label(
                    "unique_clicks"
                ),
                sa.func.sum(_flag(machine)).label("machine_clicks"),
                sa.func.count(sa.distinct(L.email_id)).label("messages"),
            )
            .select_from(
                CampaignSend.__table__.join(MailLink.__table__, L.email_id == S.email_id).outerjoin(
                    MailEvent.__table__,
                    sa.and_(E.email_id == L.email_id, E.link_idx == L.idx, E.kind == "click"),
                )
            )
            .where(S.campaign_id == campaign_id)
            .group_by(L.url)
            .order_by(sa.desc("clicks"), L.url)
            .limit(1000)
        )
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(query)
            return [
                LinkClicks(
                    str(r.url),
                    int(r.clicks or 0),
                    int(r.unique_clicks or 0),
                    int(r.machine_clicks or 0),
                    int(r.messages or 0),
                )
                for r in rows
            ]

    async def lead_statuses(self, campaign_id: str) -> dict[str, int]:
        """How many of the campaign's leads are in each status (and stopped for each reason)."""
        lead = CampaignLead.__table__.c
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(
                sa.select(lead.status, lead.stop_reason, sa.func.count())
                .where(lead.campaign_id == campaign_id)
                .group_by(lead.status, lead.stop_reason)
            )
            out: dict[str, int] = {}
            for status, reason, n in rows:
                out[str(status)] = out.get(str(status), 0) + int(n)
                if status == "stopped" and reason:
                    key = f"stopped_{reason}"
                    out[key] = out.get(key, 0) + int(n)
        return out

    async def lead_exists(self, campaign_id: str, lead_id: str) -> bool:
        """Whether the lead belongs to the campaign (the caller checked the campaign)."""
        async with read_connection(self.engine) as conn:
            found = await conn.execute(
                sa.select(CampaignLead.id).where(
                    CampaignLead.id == lead_id, CampaignLead.campaign_id == campaign_id
                )
            )
            return found.first() is not None

    async def timeline(self, lead_id: str) -> list[TimelineEvent]:
        """The lead's events from every source, oldest first: queued, sent / failed /
        cancelled (outbox), bounced / deferred (DSNs), opened / clicked (tracking, with the
        actor), and the lead events (replied, unsubscribed, stopped, suppressed ...)."""
        out: list[TimelineEvent] = []
        async with read_connection(self.engine) as conn:
            await _sends_into(conn, lead_id, out)
            await _bounces_into(conn, lead_id, out)
            await _tracking_into(conn, lead_id, out)
            await _lead_events_into(conn, lead_id, out)
        out.sort(key=lambda e: e.id)
        return out


def _labels(variants: Any) -> tuple[str, ...]:
    if not isinstance(variants, list):
        return ()
    labels = [str(v.get("label")) for v in variants if isinstance(v, dict) and v.get("label")]
    return tuple(dict.fromkeys(labels))


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


_RANK: Final = {
    "queued": 0,
    "sent": 1,
    "failed": 1,
    "cancelled": 1,
    "deferred": 2,
    "bounced": 2,
    "opened": 3,
    "clicked": 4,
}
"""Order of entries in the same millisecond (a send before its outcome, ...); lead events 5."""


def timeline_id(at: float, kind: str, source: str) -> str:
    """A stable id for a timeline entry: its time (milliseconds), the kind's rank, then a hash
    of its source row, in the id alphabet, so ids sort by time and serve as cursors."""
    millis = max(0, int(at * 1000)) & ((1 << 48) - 1)
    digest = int.from_bytes(hashlib.sha256(source.encode()).digest()[:10], "big") >> 4
    number = (millis << 80) | (_RANK.get(kind, 5) << 76) | digest
    chars = []
    for _ in range(26):
        number, rest = divmod(number, 32)
        chars.append(_CROCKFORD[rest])
    return "tle_" + "".join(reversed(chars))


def _event(
    source: str,
    at: float,
    kind: str,
    position: int | None,
    variant: str | None,
    email_id: str | None,
    detail: dict[str, Any] | None = None,
    *,
    lead_event: bool = False,
) -> TimelineEvent:
    rank_kind = "lead" if lead_event else kind  # lead events after the mail facts they follow
    return TimelineEvent(
        timeline_id(at, rank_kind, source), at, kind, position, variant, email_id, detail or {}
    )


async def _sends_into(conn: AsyncConnection, lead_id: str, out: list[TimelineEvent]) -> None:
    rows = await conn.execute(
        sa.select(
            S.position,
            S.variant,
            S.email_id,
            S.queued_at,
            M.state,
            M.subject,
            M.handed_off_at,
            M.finished_at,
            M.error_code,
        )
        .select_from(CampaignSend.__table__.outerjoin(MailMessage.__table__, M.id == S.email_id))
        .where(S.lead_id == lead_id)
        .order_by(S.position)
        .limit(MAX_TIMELINE)
    )
    for r in rows:
        key = f"send:{lead_id}:{r.position}"
        subject = {"subject": r.subject} if r.subject is not None else {}
        out.append(_event(key, r.queued_at, "queued", r.position, r.variant, r.email_id, subject))
        if r.state in ("sent", "failed", "cancelled"):
            at = r.finished_at or r.handed_off_at or r.queued_at
            detail = {"error_code": r.error_code} if r.state != "sent" and r.error_code else {}
            out.append(
                _event(f"{key}:{r.state}", at, r.state, r.position, r.variant, r.email_id, detail)
            )


async def _bounces_into(conn: AsyncConnection, lead_id: str, out: list[TimelineEvent]) -> None:
    rows = await conn.execute(
        sa.select(
            B.id, B.kind, B.status, B.recipient, B.created_at, S.position, S.variant, S.email_id
        )
        .select_from(
            MailBounce.__table__.join(CampaignSend.__table__, S.email_id == B.sent_message_id)
        )
        .where(S.lead_id == lead_id, B.kind.in_(_FAILED_BOUNCE))
        .order_by(B.id)
        .limit(MAX_TIMELINE)
    )
    for r in rows:
        delayed = bool(r.status) and str(r.status).startswith("4.")
        kind = "deferred" if delayed else "bounced"
        detail = {"bounce_kind": r.kind, "status": r.status}
        out.append(
            _event(f"bounce:{r.id}", r.created_at, kind, r.position, r.variant, r.email_id, detail)
        )


async def _tracking_into(conn: AsyncConnection, lead_id: str, out: list[TimelineEvent]) -> None:
    rows = await conn.execute(
        sa.select(E.id, E.kind, E.actor, E.at, L.url, S.position, S.variant, S.email_id)
        .select_from(
            MailEvent.__table__.join(CampaignSend.__table__, S.email_id == E.email_id).outerjoin(
                MailLink.__table__, sa.and_(L.email_id == E.email_id, L.idx == E.link_idx)
            )
        )
        .where(S.lead_id == lead_id)
        .order_by(E.at, E.id)
        .limit(MAX_TIMELINE)
    )
    for r in rows:
        kind = "opened" if r.kind == "open" else "clicked"
        detail: dict[str, Any] = {"actor": r.actor, "by_person": r.actor in _PEOPLE}
        if r.url is not None:
            detail["url"] = r.url
        out.append(_event(f"mail:{r.id}", r.at, kind, r.position, r.variant, r.email_id, detail))


async def _lead_events_into(conn: AsyncConnection, lead_id: str, out: list[TimelineEvent]) -> None:
    rows = await conn.execute(
        sa.select(CE.id, CE.kind, CE.position, CE.email_id, CE.detail, CE.at)
        .where(CE.lead_id == lead_id)
        .order_by(CE.at, CE.id)
        .limit(MAX_TIMELINE)
    )
    for r in rows:
        detail = dict(r.detail) if isinstance(r.detail, dict) else {}
        out.append(
            _event(
                f"lead:{r.id}", r.at, r.kind, r.position, None, r.email_id, detail, lead_event=True
            )
        )
