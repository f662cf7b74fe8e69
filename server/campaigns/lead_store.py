"""A campaign's leads and their drafts in the database (SQLAlchemy Core): add (deduplicated per
campaign), list, and the approval moves of the playground (approve, unapprove, reset) as the
campaigns contract defines them. Callers check the campaign's owner first."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.campaigns import lead_index as li
from server.campaigns.sequencer_store import stop_lead
from server.db.models import Campaign, CampaignDraft, CampaignLead, CampaignSend
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id

__all__ = [
    "MAX_LEADS",
    "DraftRecord",
    "LeadRecord",
    "LeadStore",
    "LeadsClosed",
    "LeadsFull",
    "NewLead",
    "NotApprovable",
]

MAX_LEADS = 100_000
"""Leads per campaign."""

_BATCH = 500

_L = cast(Table, CampaignLead.__table__)
_D = cast(Table, CampaignDraft.__table__)


class LeadsClosed(Exception):
    """The campaign is completed or cancelled: it takes no more leads."""


class LeadsFull(Exception):
    """The campaign would hold more than :data:`MAX_LEADS` leads."""


class NotApprovable(Exception):
    """An approval move that the lead's or draft's state does not allow; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class NewLead:
    """A lead to add: its address (already normalised), variables and source row."""

    email: str
    data: dict[str, Any]
    row_index: int | None = None
    verdict: tuple[str, list[str]] | None = None
    """emailintel's offline (verdict, reasons), when the caller checked it (None: preflight
    derives it later)."""


def _derived(lead: NewLead) -> dict[str, Any]:
    """The lead's derived columns (:mod:`server.campaigns.lead_index`); verdict columns stay
    NULL when the caller did not check the address."""
    if lead.verdict is None:
        return {
            "domain": lead.email.rpartition("@")[2],
            "verdict": None,
            "verdict_detail": None,
            "var_index": li.var_index(lead.data),
        }
    return asdict(li.index(lead.email, lead.data, lead.verdict))


@dataclass(frozen=True)
class LeadRecord:
    """A stored lead."""

    id: str
    campaign_id: str
    email: str
    data: dict[str, Any]
    row_index: int | None
    status: str
    stop_reason: str | None
    next_position: int
    due_at: float | None
    alias_id: str | None
    last_sent_at: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class DraftRecord:
    """A stored draft of one lead's step."""

    lead_id: str
    email: str
    position: int
    variant: str
    subject: str
    text: str | None
    html: str | None
    state: str
    approved_at: float | None
    created_at: float
    updated_at: float


_LEAD_COLUMNS = [getattr(_L.c, f) for f in LeadRecord.__dataclass_fields__]
_DRAFT_COLUMNS = [
    _D.c.lead_id,
    _L.c.email,
    *[getattr(_D.c, f) for f in list(DraftRecord.__dataclass_fields__)[2:]],
]


def _insert_new(conn: AsyncConnection) -> Any:
    """INSERT … ON CONFLICT (campaign_id, email) DO NOTHING RETURNING id (both backends)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return (
        dialect.insert(CampaignLead)
        .on_conflict_do_nothing(index_elements=["campaign_id", "email"])
        .returning(CampaignLead.id)
    )


async def _open_state(conn: AsyncConnection, user_id: str, campaign_id: str) -> str:
    """The state of the user's campaign whose leads may still change, in ``conn``'s transaction:
    LookupError when there is no such campaign (or it was deleted since the caller read it),
    LeadsClosed when it has ended."""
    state = (
        await conn.execute(
            select(Campaign.status).where(Campaign.id == campaign_id, Campaign.user_id == user_id)
        )
    ).scalar_one_or_none()
    if state is None:
        raise LookupError(campaign_id)
    if state in ("completed", "cancelled"):
        raise LeadsClosed
    return str(state)


class LeadStore:
    """Leads and drafts of campaigns (the caller owns the campaign)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, user_id: str, campaign_id: str, leads: Sequence[NewLead]) -> int:
        """Add leads not yet in the campaign (an address already there is skipped); returns how
        many were added (LookupError: no such campaign of the user). In a draft they wait (pending); in a launched campaign they start now."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            state = await _open_state(conn, user_id, campaign_id)
            held = (
                await conn.execute(
                    select(func.count()).select_from(_L).where(_L.c.campaign_id == campaign_id)
                )
            ).scalar_one()
            if held + len(leads) > MAX_LEADS:
                raise LeadsFull
            started = state != "draft"
            rows = [
                {
                    "id": new_id("cld", now=now),
                    "campaign_id": campaign_id,
                    "user_id": user_id,
                    "email": lead.email,
                    "data": lead.data,
                    "row_index": lead.row_index,
                    "status": "active" if started else "pending",
                    "stop_reason": None,
                    "next_position": 0,
                    "due_at": now if started else None,
                    "alias_id": None,
                    "thread_message_id": None,
                    "last_sent_at": None,
                    "created_at": now,
                    "updated_at": now,
                    **_derived(lead),
                }
                for lead in leads
            ]
            added = 0
            for start in range(0, len(rows), _BATCH):
                chunk = rows[start : start + _BATCH]
                added += len((await conn.execute(_insert_new(conn), chunk)).all())
            if added:
                await conn.execute(
                    update(Campaign)
                    .where(Campaign.id == campaign_id)
                    .values(version=Campaign.version + 1, updated_at=now)
                )
        return added

    async def page(
        self,
        campaign_id: str,
        *,
        status: str | None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
    ) -> list[LeadRecord]:
        """Newest first, optionally of one status."""
        query = select(*_LEAD_COLUMNS).where(_L.c.campaign_id == campaign_id)
        if status is not None:
            query = query.where(_L.c.status == status)
        query = newest_first(query, _L.c.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            return [LeadRecord(*row) for row in (await conn.execute(query)).all()]

    async def all(self, campaign_id: str, *, statuses: Sequence[str]) -> list[LeadRecord]:
        """Every lead of these statuses, oldest first (preflight; bounded by MAX_LEADS)."""
        query = (
            select(*_LEAD_COLUMNS)
            .where(_L.c.campaign_id == campaign_id, _L.c.status.in_(list(statuses)))
            .order_by(_L.c.id)
        )
        async with read_connection(self.engine) as conn:
            return [LeadRecord(*row) for row in (await conn.execute(query)).all()]

    async def get(self, campaign_id: str, lead_id: str) -> LeadRecord | None:
        """The campaign's lead, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_LEAD_COLUMNS).where(
                        _L.c.campaign_id == campaign_id, _L.c.id == lead_id
                    )
                )
            ).first()
        return None if row is None else LeadRecord(*row)

    async def drafts(
        self,
        campaign_id: str,
        *,
        state: str | None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
    ) -> list[DraftRecord]:
        """The campaign's drafts (of one state if given), by lead, newest lead first."""
        query = (
            select(*_DRAFT_COLUMNS)
            .join(_L, _L.c.id == _D.c.lead_id)
            .where(_D.c.campaign_id == campaign_id)
        )
        if state is not None:
            query = query.where(_D.c.state == state)
        if after is not None:
            query = query.where(_D.c.lead_id < after)
        query = query.order_by(_D.c.lead_id.desc(), _D.c.position.desc()).offset(offset)
        async with read_connection(self.engine) as conn:
            return [DraftRecord(*row) for row in (await conn.execute(query.limit(limit))).all()]

    async def lead_drafts(self, lead_id: str) -> list[DraftRecord]:
        """Every draft of one lead, by step."""
        query = (
            select(*_DRAFT_COLUMNS)
            .join(_L, _L.c.id == _D.c.lead_id)
            .where(_D.c.lead_id == lead_id)
            .order_by(_D.c.position)
        )
        async with read_connection(self.engine) as conn:
            return [DraftRecord(*row) for row in (await conn.execute(query)).all()]

    async def _draft(self, conn: AsyncConnection, lead_id: str, position: int) -> Any:
        return (
            await conn.execute(
                select(_D.c.state).where(_D.c.lead_id == lead_id, _D.c.position == position)
            )
        ).scalar_one_or_none()

    async def _sent(self, conn: AsyncConnection, lead_id: str, position: int) -> bool:
        found = await conn.execute(
            select(CampaignSend.lead_id).where(
                CampaignSend.lead_id == lead_id, CampaignSend.position == position
            )
        )
        return found.first() is not None

    async def approve(
        self, lead: LeadRecord, position: int, edits: Mapping[str, str | None]
    ) -> None:
        """Approve the lead's draft of step ``position`` (with ``edits`` to subject, text or html
        applied first): the draft becomes 'approved' and a lead waiting for it is due now."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            if await self._draft(conn, lead.id, position) is None:
                raise NotApprovable("draft_not_found", f"No draft for step {position} yet.")
            if await self._sent(conn, lead.id, position):
                raise NotApprovable("already_sent", f"Step {position} was already sent.")
            await conn.execute(
                update(_D)
                .where(_D.c.lead_id == lead.id, _D.c.position == position)
                .values(**edits, state="approved", approved_at=now, updated_at=now)
            )
            await conn.execute(
                update(_L)
                .where(
                    _L.c.id == lead.id,
                    _L.c.status == "waiting_approval",
                    _L.c.next_position == position,
                )
                .values(status="active", due_at=now, updated_at=now)
            )

    async def unapprove(self, lead: LeadRecord, position: int) -> None:
        """Take an approval back before the step is sent: the draft is a draft again and the
        lead waits for approval once more (if that step is its next)."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            state = await self._draft(conn, lead.id, position)
            if state != "approved":
                raise NotApprovable("not_approved", f"Step {position} has no approved draft.")
            if await self._sent(conn, lead.id, position):
                raise NotApprovable("already_sent", f"Step {position} was already sent.")
            await conn.execute(
                update(_D)
                .where(_D.c.lead_id == lead.id, _D.c.position == position)
                .values(state="draft", approved_at=None, updated_at=now)
            )
            await conn.execute(
                update(_L)
                .where(
                    _L.c.id == lead.id,
                    _L.c.status == "active",
                    _L.c.next_position == position,
                )
                .values(status="waiting_approval", updated_at=now)
            )

    async def reset(self, lead: LeadRecord, positions: Sequence[int] | None) -> int:
        """Delete the lead's unsent drafts (of ``positions``, or all): the sequencer renders them
        afresh; a lead waiting for approval is active (due now) again. Returns drafts deleted."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            sent = select(CampaignSend.position).where(CampaignSend.lead_id == lead.id)
            query = delete(_D).where(_D.c.lead_id == lead.id, _D.c.position.not_in(sent))
            if positions is not None:
                query = query.where(_D.c.position.in_(list(positions)))
            done = await conn.execute(query)
            await conn.execute(
                update(_L)
                .where(_L.c.id == lead.id, _L.c.status == "waiting_approval")
                .values(status="active", due_at=now, updated_at=now)
            )
        return int(done.rowcount or 0)

    async def remove(
        self, user_id: str, campaign_id: str, lead_id: str, now: float | None = None
    ) -> str | None:
        """Take a lead out of the campaign: deleted (with its drafts) when no step of it was
        claimed yet; otherwise kept, so what was sent stays sent and counted and the address
        cannot be added again to restart it, but stopped (``removed``, one event) with its
        unsent drafts dropped. "deleted" or "stopped"; None when the campaign has no such lead.
        LookupError: no such campaign of the user; LeadsClosed: it has ended."""
        at = time.time() if now is None else now
        async with write_transaction(self.engine) as conn:
            await _open_state(conn, user_id, campaign_id)
            mine = (_L.c.id == lead_id, _L.c.campaign_id == campaign_id)
            sends = select(CampaignSend.position).where(CampaignSend.lead_id == lead_id)
            # next_position guards a racing claim: the sequencer moves it in the same row
            gone = await conn.execute(
                delete(_L).where(*mine, _L.c.next_position == 0, ~sends.exists())
            )
            if gone.rowcount:
                outcome = "deleted"
            elif (await conn.execute(select(_L.c.id).where(*mine))).first() is None:
                return None
            else:
                await stop_lead(conn, lead_id, campaign_id, reason="removed", now=at)
                await conn.execute(
                    delete(_D).where(_D.c.lead_id == lead_id, _D.c.position.not_in(sends))
                )
                outcome = "stopped"
            await conn.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id)
                .values(version=Campaign.version + 1, updated_at=at)
            )
        return outcome

    async def count(self, campaign_id: str) -> int:
        """How many leads the campaign holds."""
        async with read_connection(self.engine) as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).select_from(_L).where(_L.c.campaign_id == campaign_id)
                    )
                ).scalar_one()
            )
