"""The sequencer's SQL (SQLAlchemy Core, SQLite and PostgreSQL): sending campaigns, their steps,
aliases and due leads; the exactly-once claim of a lead's step together with its outbox row;
drafts awaiting approval; holds; lead stops and campaign events; campaign completion.

Exactly once: :meth:`SequencerStore.claim_and_queue` advances the lead only from the step it
was read at (a conditional UPDATE), inserts the ``campaign_sends`` primary key (lead, step) and
the ``mail_messages`` row (and its thread reference, so replies and bounces find it) in ONE
transaction (a savepoint within a group's transaction). A racing sequencer either finds the
lead moved on or hits the primary key; both roll back that claim, message included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.campaigns.store import StepRecord
from server.db.models import (
    Campaign,
    CampaignDraft,
    CampaignEvent,
    CampaignLead,
    CampaignSend,
    CampaignStep,
    MailAlias,
    MailBounce,
    MailDomain,
    MailMessage,
)
from server.db.tx import read_connection, write_transaction
from server.ids import new_id
from server.mail.inbound_store import InboundStore
from server.mail.outbox import Outbox, domain_cap_key, lock_caps
from server.mail.outbox_rules import CapReached, DailyCaps
from server.webhooks.mail_events import campaign_lead_event

__all__ = [
    "RUNNING",
    "AliasRow",
    "CampaignRow",
    "Claim",
    "ClaimCaps",
    "DraftRow",
    "LeadRow",
    "SequencerStore",
    "insert_event",
]

C = Campaign.__table__.c
L = CampaignLead.__table__.c
S = CampaignSend.__table__.c
ST = CampaignStep.__table__.c
D = CampaignDraft.__table__.c
E = CampaignEvent.__table__.c
RUNNING = ("active", "waiting_approval")
"""Lead states that keep a campaign from completing (and that a stop applies to)."""


@dataclass(frozen=True)
class CampaignRow:
    """The columns the sequencer reads of a campaign."""

    id: str
    user_id: str
    holds: list[Any]
    sender_alias_ids: list[str]
    schedule: dict[str, Any]
    daily_cap: int | None
    alias_daily_cap: int | None
    requires_approval: bool
    track_opens: bool
    track_clicks: bool


@dataclass(frozen=True)
class AliasRow:
    """A sending alias: its address and whether its domain is verified."""

    id: str
    address: str
    domain: str
    verified: bool


@dataclass(frozen=True)
class LeadRow:
    """A due lead."""

    id: str
    campaign_id: str
    email: str
    data: dict[str, Any]
    next_position: int
    due_at: float
    alias_id: str | None
    thread_message_id: str | None


@dataclass(frozen=True)
class ClaimCaps:
    """A claim's campaign caps: the campaign's and its alias's sends a day (None: no cap),
    counted from ``since`` (the campaign's local day start)."""

    campaign_daily: int | None = None
    alias_daily: int | None = None
    since: float = 0.0


@dataclass(frozen=True)
class Claim:
    """One (lead, step) to claim with its built message (outbox row and tracked links)."""

    lead: LeadRow
    variant: str
    alias_id: str
    row: Mapping[str, Any]
    links: Sequence[str]
    next_due: float | None
    now: float
    caps: ClaimCaps = ClaimCaps()


@dataclass(frozen=True)
class DraftRow:
    """A lead's rendered step awaiting (``draft``) or holding (``approved``) approval."""

    variant: str
    subject: str
    text: str | None
    html: str | None
    state: str


def _dialect(conn: AsyncConnection) -> Any:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


async def insert_event(
    conn: AsyncConnection,
    *,
    campaign_id: str,
    lead_id: str,
    kind: str,
    now: float,
    position: int | None = None,
    email_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> str | None:
    """Record a campaign event once per (lead, kind, message); its id when it was new."""
    event_id = new_id("cev", now=now)
    values = {
        "id": event_id,
        "campaign_id": campaign_id,
        "lead_id": lead_id,
        "position": position,
        "kind": kind,
        "email_id": email_id,
        "detail": dict(detail) if detail is not None else None,
        "at": now,
    }
    if email_id is None:  # NULLs never conflict in a unique index: check first
        found = await conn.execute(
            sa.select(E.id).where(E.lead_id == lead_id, E.kind == kind, E.email_id.is_(None))
        )
        if found.first() is not None:
            return None
    statement = (
        _dialect(conn)
        .insert(CampaignEvent)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["lead_id", "kind", "email_id"])
    )
    return event_id if (await conn.execute(statement)).rowcount == 1 else None


class SequencerStore:
    """Every query of the sequencer on one database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- reads ----------------------------------------------------------------------------

    async def sending_campaigns(self) -> list[CampaignRow]:
        """Campaigns whose user status is ``active`` (held or not: holds are re-evaluated)."""
        query = sa.select(
            C.id,
            C.user_id,
            C.holds,
            C.sender_alias_ids,
            C.schedule,
            C.daily_cap,
            C.alias_daily_cap,
            C.requires_approval,
            C.track_opens,
            C.track_clicks,
        ).where(C.status == "active")
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query.order_by(C.id))).all()
        return [
            CampaignRow(
                id=r.id,
                user_id=r.user_id,
                holds=list(r.holds or []),
                sender_alias_ids=[str(a) for a in (r.sender_alias_ids or [])],
                schedule=dict(r.schedule or {}),
                daily_cap=r.daily_cap,
                alias_daily_cap=r.alias_daily_cap,
                requires_approval=bool(r.requires_approval),
                track_opens=bool(r.track_opens),
                track_clicks=bool(r.track_clicks),
            )
            for r in rows
        ]

    async def steps(self, campaign_id: str) -> dict[int, StepRecord]:
        """The campaign's steps by position."""
        query = sa.select(ST.id, ST.position, ST.delay_seconds, ST.variants).where(
            ST.campaign_id == campaign_id
        )
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return {r.position: StepRecord.of_row(r) for r in rows}

    async def aliases(self, user_id: str, alias_ids: Sequence[str]) -> dict[str, AliasRow]:
        """The user's aliases among ``alias_ids`` (another user's id is simply absent)."""
        if not alias_ids:
            return {}
        query = (
            sa.select(MailAlias.id, MailAlias.local_part, MailDomain.name, MailDomain.status)
            .join(MailDomain, MailDomain.id == MailAlias.domain_id)
            .where(MailAlias.user_id == user_id, MailAlias.id.in_(list(alias_ids)))
        )
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return {
            r.id: AliasRow(r.id, f"{r.local_part}@{r.name}", r.name, r.status == "verified")
            for r in rows
        }

    async def alias_usage(
        self, alias_ids: Sequence[str], since: float
    ) -> dict[str, tuple[int, float | None]]:
        """Per alias: campaign sends since ``since`` (all campaigns) and the last send time."""
        if not alias_ids:
            return {}
        today = sa.func.sum(sa.case((S.queued_at >= since, 1), else_=0))
        query = (
            sa.select(S.alias_id, today, sa.func.max(S.queued_at))
            .where(S.alias_id.in_(list(alias_ids)))
            .group_by(S.alias_id)
        )
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return {
            str(a): (int(n or 0), float(last) if last is not None else None) for a, n, last in rows
        }

    async def campaign_counts(self, campaign_id: str, since: float) -> tuple[int, int, int]:
        """(sends in all, sends since ``since``, sends that hard-bounced)."""
        today = sa.func.sum(sa.case((S.queued_at >= since, 1), else_=0))
        sends = sa.select(sa.func.count(), today).where(S.campaign_id == campaign_id)
        bounced = (
            sa.select(sa.func.count(sa.distinct(S.email_id)))
            .select_from(
                CampaignSend.__table__.join(MailBounce, MailBounce.sent_message_id == S.email_id)
            )
            .where(S.campaign_id == campaign_id, MailBounce.kind == "hard")
        )
        async with read_connection(self.engine) as conn:
            total, recent = (await conn.execute(sends)).one()
            bounces = (await conn.execute(bounced)).scalar_one()
        return int(total), int(recent or 0), int(bounces)

    async def due_leads(self, campaign_id: str, now: float, limit: int) -> list[LeadRow]:
        """Active leads of the campaign due by ``now``, earliest first."""
        query = (
            sa.select(
                L.id,
                L.campaign_id,
                L.email,
                L.data,
                L.next_position,
                L.due_at,
                L.alias_id,
                L.thread_message_id,
            )
            .where(L.campaign_id == campaign_id, L.status == "active", L.due_at <= now)
            .order_by(L.due_at, L.id)
            .limit(limit)
        )
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [
            LeadRow(
                r.id,
                r.campaign_id,
                r.email,
                dict(r.data or {}),
                int(r.next_position),
                float(r.due_at),
                r.alias_id,
                r.thread_message_id,
            )
            for r in rows
        ]

    async def draft(self, lead_id: str, position: int) -> DraftRow | None:
        """The lead's draft of step ``position``, if any."""
        query = sa.select(D.variant, D.subject, D.text, D.html, D.state).where(
            D.lead_id == lead_id, D.position == position
        )
        async with read_connection(self.engine) as conn:
            row = (await conn.execute(query)).first()
        return DraftRow(row.variant, row.subject, row.text, row.html, row.state) if row else None

    # --- writes ---------------------------------------------------------------------------

    async def set_holds(self, campaign_id: str, holds: list[dict[str, Any]], now: float) -> None:
        """Store the campaign's system holds (status and version untouched)."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.update(Campaign)
                .where(C.id == campaign_id, C.status == "active")
                .values(holds=holds, updated_at=now)
            )

    async def save_draft(
        self,
        lead: LeadRow,
        position: int,
        variant: str,
        content: tuple[str, str | None, str | None],
        now: float,
    ) -> bool:
        """Store the lead's rendered step as a draft and park the lead ``waiting_approval``
        (only if it still stands at that step); whether it applied."""
        subject, text, html = content
        try:
            async with write_transaction(self.engine) as conn:
                await self._save_draft(conn, lead, position, variant, subject, text, html, now)
        except _Lost:
            return False
        return True

    @staticmethod
    async def _save_draft(
        conn: AsyncConnection,
        lead: LeadRow,
        position: int,
        variant: str,
        subject: str,
        text: str | None,
        html: str | None,
        now: float,
    ) -> None:
        moved = await conn.execute(
            sa.update(CampaignLead)
            .where(L.id == lead.id, L.status == "active", L.next_position == position)
            .values(status="waiting_approval", updated_at=now)
        )
        if moved.rowcount != 1:
            raise _Lost
        await conn.execute(
            _dialect(conn)
            .insert(CampaignDraft)
            .values(
                lead_id=lead.id,
                position=position,
                campaign_id=lead.campaign_id,
                variant=variant,
                subject=subject,
                text=text,
                html=html,
                state="draft",
                approved_at=None,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["lead_id", "position"])
        )

    async def park(self, lead_id: str, position: int, now: float) -> None:
        """A lead whose draft is not approved waits for approval."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.update(CampaignLead)
                .where(L.id == lead_id, L.status == "active", L.next_position == position)
                .values(status="waiting_approval", updated_at=now)
            )

    async def claim_and_queue(
        self, outbox: Outbox, claims: Sequence[Claim], caps: DailyCaps | None = None
    ) -> list[bool]:
        """Claim each (lead, step), queue its message and advance its lead: one transaction
        for the group (one commit), one savepoint per claim, so a claim another sequencer got
        first (or whose lead changed, or that a mail daily cap of ``caps`` refuses) writes
        nothing and the others still apply. Whether each was queued by this call."""
        caps = caps if caps is not None else DailyCaps()
        results: list[bool] = []
        async with write_transaction(self.engine) as conn:
            await lock_caps(conn, _cap_keys(claims, caps))  # all first, in one order
            for claim in claims:
                try:
                    async with conn.begin_nested():
                        await self._claim(conn, outbox, claim, caps)
                except (_Lost, IntegrityError, CapReached, _Capped):
                    results.append(False)
                else:
                    results.append(True)
        return results

    async def _claim(
        self, conn: AsyncConnection, outbox: Outbox, claim: Claim, caps: DailyCaps
    ) -> None:
        lead, row, now = claim.lead, claim.row, claim.now
        position = lead.next_position
        await _check_campaign_caps(conn, claim)
        values: dict[str, Any] = {
            "next_position": position + 1,
            "last_sent_at": now,
            "alias_id": claim.alias_id,
            "thread_message_id": lead.thread_message_id or str(row["message_id"]),
            "updated_at": now,
        }
        if claim.next_due is None:
            values.update(status="completed", due_at=None)
        else:
            values["due_at"] = claim.next_due
        moved = await conn.execute(
            sa.update(CampaignLead)
            .where(L.id == lead.id, L.status == "active", L.next_position == position)
            .values(**values)
        )
        if moved.rowcount != 1:
            raise _Lost
        await conn.execute(
            sa.insert(CampaignSend).values(
                lead_id=lead.id,
                position=position,
                campaign_id=lead.campaign_id,
                variant=claim.variant,
                alias_id=claim.alias_id,
                email_id=row["id"],
                queued_at=now,
            )
        )
        await outbox.insert(row, claim.links, conn=conn, caps=caps)
        # Threaded like the API's sends, so replies and bounces find the message.
        refs = [lead.thread_message_id.strip("<>")] if lead.thread_message_id else []
        await InboundStore(self.engine).link_outbound(
            str(row["user_id"]),
            sent_message_id=str(row["id"]),
            message_id=str(row["message_id"]).strip("<>"),
            in_reply_to=refs,
            references=refs,
            subject=str(row["subject"]),
            now=now,
            conn=conn,
        )

    async def fail(self, lead: LeadRow, code: str, detail: str, now: float) -> None:
        """A lead whose step cannot be built: ``failed`` with a ``failed`` event saying why."""
        async with write_transaction(self.engine) as conn:
            moved = await conn.execute(
                sa.update(CampaignLead)
                .where(L.id == lead.id, L.status == "active", L.next_position == lead.next_position)
                .values(status="failed", due_at=None, updated_at=now)
            )
            if moved.rowcount == 1:
                await insert_event(
                    conn,
                    campaign_id=lead.campaign_id,
                    lead_id=lead.id,
                    kind="failed",
                    now=now,
                    position=lead.next_position,
                    detail={"code": code, "detail": detail[:300]},
                )

    async def complete_if_done(self, campaign_id: str, now: float) -> bool:
        """Mark an active campaign ``completed`` when no lead is running any more (read first,
        so a campaign still running costs no write lock; the UPDATE re-checks atomically)."""
        running = sa.exists().where(L.campaign_id == campaign_id, L.status.in_(RUNNING))
        async with read_connection(self.engine) as conn:
            if (await conn.execute(sa.select(running))).scalar():
                return False
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                sa.update(Campaign)
                .where(C.id == campaign_id, C.status == "active", ~running)
                .values(
                    status="completed",
                    holds=[],
                    finished_at=now,
                    updated_at=now,
                    version=C.version + 1,
                )
            )
            return bool(done.rowcount == 1)

    async def sent_ids(self, message_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """(lead id, campaign id, email id) of campaign sends whose Message-ID is one of these."""
        if not message_ids:
            return []
        query = (
            sa.select(S.lead_id, S.campaign_id, S.email_id)
            .join(MailMessage, MailMessage.id == S.email_id)
            .where(MailMessage.message_id.in_(list(message_ids)))
        )
        async with read_connection(self.engine) as conn:
            return [(r.lead_id, r.campaign_id, r.email_id) for r in (await conn.execute(query))]


class _Lost(Exception):
    """The claim lost a race (rolls the transaction back)."""


class _Capped(Exception):
    """The claim would exceed a campaign cap (rolls its savepoint back)."""


def _cap_keys(claims: Sequence[Claim], caps: DailyCaps) -> list[str]:
    """The cap locks a group of claims takes: its mail domains' (under mail caps), its
    campaigns' and its aliases' (under campaign caps)."""
    keys: list[str] = []
    for claim in claims:
        if caps.per_domain or caps.per_alias:
            keys.append(domain_cap_key(str(claim.row["domain"])))
        if claim.caps.campaign_daily is not None:
            keys.append(f"campaign-daily-cap:{claim.lead.campaign_id}")
        if claim.caps.alias_daily is not None:
            keys.append(f"alias-daily-cap:{claim.alias_id}")
    return keys


async def _check_campaign_caps(conn: AsyncConnection, claim: Claim) -> None:
    """_Capped when the claim's campaign or alias has its day's sends already (counted on the
    claim's transaction, under the locks of :func:`_cap_keys`: exact under racing sequencers)."""
    caps = claim.caps
    for cap, column, value in (
        (caps.campaign_daily, S.campaign_id, claim.lead.campaign_id),
        (caps.alias_daily, S.alias_id, claim.alias_id),
    ):
        if cap is None:
            continue
        sent = sa.select(sa.func.count()).where(column == value, S.queued_at >= caps.since)
        if int((await conn.execute(sent)).scalar_one()) >= cap:
            raise _Capped


async def stop_lead(
    conn: AsyncConnection,
    lead_id: str,
    campaign_id: str,
    *,
    reason: str,
    now: float,
    email_id: str | None = None,
    position: int | None = None,
    detail: Mapping[str, Any] | None = None,
    kind: str | None = None,
    stop: bool = True,
) -> bool:
    """In ``conn``'s transaction: record the event (kind ``kind`` or the reason, once, with its
    customer webhook: ``campaign.lead_replied`` / ``campaign.lead_unsubscribed``) and stop the
    lead if it is still running and ``stop``; whether the lead stopped."""
    event_id = await insert_event(
        conn,
        campaign_id=campaign_id,
        lead_id=lead_id,
        kind=kind or reason,
        now=now,
        position=position,
        email_id=email_id,
        detail=detail,
    )
    if event_id is not None:
        lead = (await conn.execute(sa.select(L.user_id, L.email).where(L.id == lead_id))).first()
        if lead is not None:
            await campaign_lead_event(
                conn,
                lead.user_id,
                kind=kind or reason,
                campaign_id=campaign_id,
                lead_id=lead_id,
                email=lead.email,
                email_id=email_id,
                event_row_id=event_id,
            )
    if not stop:
        return False
    moved = await conn.execute(
        sa.update(CampaignLead)
        .where(L.id == lead_id, L.status.in_(RUNNING))
        .values(status="stopped", stop_reason=reason, due_at=None, updated_at=now)
    )
    return bool(moved.rowcount == 1)
