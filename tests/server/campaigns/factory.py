"""Rows for campaign tests, written straight into the tables (revision 0014) so that tests of the
sequencer, the stats and the routes can set up any state without going through the API."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from server.db.engine import Database
from server.db.models import Campaign, CampaignDraft, CampaignLead, CampaignSend, CampaignStep, User
from server.db.tx import write_transaction
from server.ids import new_id

DEFAULT_SCHEDULE: dict[str, Any] = {
    "timezone": "UTC",
    "days": [0, 1, 2, 3, 4, 5, 6],
    "start": "00:00",
    "end": "23:59",
    "min_gap_seconds": 0,
    "jitter_seconds": 0,
}
"""Every day, all day, no gap: the schedule that never holds a send back."""


@dataclass(frozen=True)
class StepSpec:
    """One step: its delay after the previous step and its variants."""

    delay_seconds: int = 0
    variants: Sequence[Mapping[str, Any]] = (
        {"label": "A", "weight": 1, "subject": "Hi {{first_name|there}}", "text": "Hello"},
    )


@dataclass(frozen=True)
class CampaignIds:
    """What ``make_campaign`` created."""

    user_id: str
    campaign_id: str
    step_ids: list[str]
    lead_ids: list[str] = field(default_factory=list)


async def make_user(db: Database, user_id: str | None = None, plan: str = "paid") -> str:
    """A user row (the owner of campaigns); returns its id."""
    uid = user_id or new_id("usr")
    async with write_transaction(db.engine) as conn:
        await conn.execute(
            User.__table__.insert().values(
                id=uid,
                subject=f"sub-{uid}",
                email=f"{uid.lower()}@example.test",
                plan=plan,
                created_at=time.time(),
                lookups_used=0,
            )
        )
    return uid


async def make_campaign(
    db: Database,
    *,
    user_id: str | None = None,
    name: str = "Test campaign",
    status: str = "draft",
    steps: Sequence[StepSpec] = (StepSpec(),),
    leads: Sequence[Mapping[str, Any]] = (),
    lead_status: str = "pending",
    due_at: float | None = None,
    sender_alias_ids: Sequence[str] = (),
    schedule: Mapping[str, Any] | None = None,
    now: float | None = None,
    **columns: Any,
) -> CampaignIds:
    """A campaign with its steps and leads (``leads``: mappings with ``email`` and any template
    variables); ``columns`` overrides any other ``campaigns`` column."""
    at = time.time() if now is None else now
    uid = user_id or await make_user(db)
    cid = new_id("cmp", now=at)
    values: dict[str, Any] = {
        "id": cid,
        "user_id": uid,
        "name": name,
        "name_key": name.casefold(),
        "status": status,
        "holds": [],
        "dataset_id": None,
        "email_column": None,
        "sender_alias_ids": list(sender_alias_ids),
        "schedule": dict(schedule or DEFAULT_SCHEDULE),
        "daily_cap": None,
        "alias_daily_cap": None,
        "requires_approval": False,
        "stop_on_reply": True,
        "track_opens": False,
        "track_clicks": False,
        "settings": {},
        "version": 1,
        "created_at": at,
        "updated_at": at,
        "launched_at": at if status != "draft" else None,
        "finished_at": None,
    }
    values.update(columns)
    step_ids = [new_id("stp", now=at) for _ in steps]
    lead_ids = [new_id("cld", now=at) for _ in leads]
    async with write_transaction(db.engine) as conn:
        await conn.execute(Campaign.__table__.insert().values(**values))
        if steps:
            await conn.execute(
                CampaignStep.__table__.insert(),
                [
                    {
                        "id": sid,
                        "campaign_id": cid,
                        "position": i,
                        "delay_seconds": spec.delay_seconds,
                        "variants": [dict(v) for v in spec.variants],
                        "created_at": at,
                        "updated_at": at,
                    }
                    for i, (sid, spec) in enumerate(zip(step_ids, steps, strict=True))
                ],
            )
        if leads:
            await conn.execute(
                CampaignLead.__table__.insert(),
                [
                    {
                        "id": lid,
                        "campaign_id": cid,
                        "user_id": uid,
                        "email": lead["email"],
                        "data": dict(lead),
                        "row_index": i,
                        "status": lead_status,
                        "stop_reason": None,
                        "next_position": 0,
                        "due_at": due_at if lead_status == "active" else None,
                        "alias_id": None,
                        "thread_message_id": None,
                        "last_sent_at": None,
                        "created_at": at,
                        "updated_at": at,
                    }
                    for i, (lid, lead) in enumerate(zip(lead_ids, leads, strict=True))
                ],
            )
    return CampaignIds(uid, cid, step_ids, lead_ids)


async def add_send(
    conn: AsyncConnection, campaign_id: str, lead_id: str, at: float, position: int = 0
) -> None:
    """A lead's step ``position`` recorded as sent (variant A, no alias or message) at ``at``."""
    await conn.execute(
        sa.insert(CampaignSend).values(
            lead_id=lead_id,
            position=position,
            campaign_id=campaign_id,
            variant="A",
            alias_id=None,
            email_id=None,
            queued_at=at,
        )
    )


async def add_draft(
    conn: AsyncConnection,
    campaign_id: str,
    lead_id: str,
    at: float,
    position: int = 0,
    subject: str = "Hi there",
    text: str = "Hello",
) -> None:
    """A lead's step ``position`` rendered as an unapproved text draft (variant A) at ``at``, as
    the sequencer leaves it for an approval campaign."""
    await conn.execute(
        sa.insert(CampaignDraft).values(
            lead_id=lead_id,
            position=position,
            campaign_id=campaign_id,
            variant="A",
            subject=subject,
            text=text,
            html=None,
            state="draft",
            approved_at=None,
            created_at=at,
            updated_at=at,
        )
    )
