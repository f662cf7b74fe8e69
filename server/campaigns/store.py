"""Campaigns and their steps in the database (SQLAlchemy Core): create, read, list, update with
an optimistic ``version``, delete (never while active) and the lifecycle transitions of
:mod:`server.campaigns.rules`. Every query filters on the owner."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.campaigns import rules
from server.db.models import Campaign, CampaignLead, CampaignStep
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id

__all__ = [
    "MAX_CAMPAIGNS",
    "CampaignLimitReached",
    "CampaignRecord",
    "CampaignStore",
    "NewStep",
    "Refused",
    "StaleVersion",
    "StepRecord",
]

MAX_CAMPAIGNS = 1000
"""Campaigns per user; creating one more is refused (409)."""


class CampaignLimitReached(Exception):
    """The user already holds :data:`MAX_CAMPAIGNS` campaigns."""


class StaleVersion(Exception):
    """The campaign changed since the caller read it (``version`` differs)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current version {current}")
        self.current = current


class Refused(Exception):
    """The action is not allowed in the campaign's current state."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


@dataclass(frozen=True)
class NewStep:
    """A step to store: its delay after the previous one and its variants (JSON mappings)."""

    delay_seconds: int
    variants: list[dict[str, Any]]


@dataclass(frozen=True)
class StepRecord:
    """A stored step: its position, delay after the previous one and variants (the API's and
    the sequencer's one step type)."""

    id: str
    position: int
    delay_seconds: int
    variants: list[dict[str, Any]]

    @classmethod
    def of_row(cls, row: Any) -> StepRecord:
        """The step of a ``campaign_steps`` row (id, position, delay_seconds, variants)."""
        return cls(str(row.id), int(row.position), int(row.delay_seconds), list(row.variants or []))


@dataclass(frozen=True)
class CampaignRecord:
    """A stored campaign with its steps (by position) and lead counts per status."""

    id: str
    user_id: str
    name: str
    status: str
    holds: list[dict[str, Any]]
    dataset_id: str | None
    email_column: str | None
    sender_alias_ids: list[str]
    schedule: dict[str, Any]
    daily_cap: int | None
    alias_daily_cap: int | None
    requires_approval: bool
    stop_on_reply: bool
    track_opens: bool
    track_clicks: bool
    settings: dict[str, Any]
    version: int
    created_at: float
    updated_at: float
    launched_at: float | None
    finished_at: float | None
    steps: tuple[StepRecord, ...] = ()
    lead_counts: dict[str, int] = field(default_factory=dict)


_T = cast(Table, Campaign.__table__)


_RECORD_FIELDS = [
    f for f in CampaignRecord.__dataclass_fields__ if f not in ("steps", "lead_counts")
]


def _record(row: Mapping[str, Any], steps: Sequence[StepRecord], counts: dict[str, int]) -> Any:
    values = {f: row[f] for f in _RECORD_FIELDS}
    return CampaignRecord(**values, steps=tuple(steps), lead_counts=counts)


async def _steps(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, list[StepRecord]]:
    out: dict[str, list[StepRecord]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = await conn.execute(
        select(CampaignStep)
        .where(CampaignStep.campaign_id.in_(list(ids)))
        .order_by(CampaignStep.campaign_id, CampaignStep.position)
    )
    for row in rows:
        out[row.campaign_id].append(StepRecord.of_row(row))
    return out


async def _counts(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    rows = await conn.execute(
        select(CampaignLead.campaign_id, CampaignLead.status, func.count())
        .where(CampaignLead.campaign_id.in_(list(ids)))
        .group_by(CampaignLead.campaign_id, CampaignLead.status)
    )
    for cid, status, count in rows.all():
        out[cid][status] = int(count)
    return out


async def _load(conn: AsyncConnection, rows: Sequence[Any]) -> list[CampaignRecord]:
    ids = [row["id"] for row in rows]
    steps, counts = await _steps(conn, ids), await _counts(conn, ids)
    return [_record(row, steps[row["id"]], counts[row["id"]]) for row in rows]


async def _insert_steps(
    conn: AsyncConnection, campaign_id: str, steps: Sequence[NewStep], now: float
) -> None:
    if steps:
        await conn.execute(
            insert(CampaignStep),
            [
                {
                    "id": new_id("stp", now=now),
                    "campaign_id": campaign_id,
                    "position": i,
                    "delay_seconds": step.delay_seconds,
                    "variants": step.variants,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, step in enumerate(steps)
            ],
        )


def _mine(user_id: str, campaign_id: str) -> Any:
    return (_T.c.id == campaign_id) & (_T.c.user_id == user_id)


class CampaignStore:
    """A user's campaigns: CRUD and lifecycle transitions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, user_id: str, values: Mapping[str, Any], steps: Sequence[NewStep]
    ) -> CampaignRecord:
        """A new draft with ``values`` (campaign columns) and ``steps``."""
        now = time.time()
        campaign_id = new_id("cmp", now=now)
        row = {
            "id": campaign_id,
            "user_id": user_id,
            "status": "draft",
            "holds": [],
            "settings": {},
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "launched_at": None,
            "finished_at": None,
            **values,
        }
        row["name_key"] = str(row["name"]).casefold()
        async with write_transaction(self.engine) as conn:
            held = (
                await conn.execute(
                    select(func.count()).select_from(_T).where(_T.c.user_id == user_id)
                )
            ).scalar_one()
            if held >= MAX_CAMPAIGNS:
                raise CampaignLimitReached
            await conn.execute(insert(_T).values(**row))
            await _insert_steps(conn, campaign_id, steps, now)
            return await self._get(conn, user_id, campaign_id)  # type: ignore[return-value]

    async def _get(
        self, conn: AsyncConnection, user_id: str, campaign_id: str
    ) -> CampaignRecord | None:
        row = (await conn.execute(select(_T).where(_mine(user_id, campaign_id)))).mappings().first()
        return None if row is None else (await _load(conn, [row]))[0]

    async def get(self, user_id: str, campaign_id: str) -> CampaignRecord | None:
        """The user's campaign, or None (another user's is None too)."""
        async with read_connection(self.engine) as conn:
            return await self._get(conn, user_id, campaign_id)

    async def list(
        self,
        user_id: str,
        *,
        status: str | None,
        search: str | None,
        limit: int,
        offset: int = 0,
        after: str | None = None,
    ) -> list[CampaignRecord]:
        """Newest first; ``search`` matches part of the name (case-insensitive, Unicode case
        folding: "STRASSE" finds "Straße", "ÉTÉ" finds "été")."""
        query = select(_T).where(_T.c.user_id == user_id)
        if status is not None:
            query = query.where(_T.c.status == status)
        if search:
            query = query.where(_T.c.name_key.contains(search.casefold(), autoescape=True))
        query = newest_first(query, _T.c.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
            return await _load(conn, rows)

    async def update(
        self,
        user_id: str,
        campaign_id: str,
        *,
        version: int,
        values: Mapping[str, Any],
        steps: Sequence[NewStep] | None,
        allowed_in: frozenset[str],
    ) -> CampaignRecord | None:
        """Set ``values`` (and replace the steps if given) when the campaign is still at
        ``version`` and in one of ``allowed_in`` states; None when it does not exist, StaleVersion
        when it moved on."""
        now = time.time()
        if "name" in values:
            values = {**values, "name_key": str(values["name"]).casefold()}
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                update(_T)
                .where(
                    _mine(user_id, campaign_id),
                    _T.c.version == version,
                    _T.c.status.in_(sorted(allowed_in)),
                )
                .values(**values, version=_T.c.version + 1, updated_at=now)
            )
            if not done.rowcount:
                current = (
                    await conn.execute(select(_T.c.version).where(_mine(user_id, campaign_id)))
                ).scalar_one_or_none()
                if current is None:
                    return None
                raise StaleVersion(int(current))
            if steps is not None:
                await conn.execute(
                    delete(CampaignStep).where(CampaignStep.campaign_id == campaign_id)
                )
                await _insert_steps(conn, campaign_id, steps, now)
            return await self._get(conn, user_id, campaign_id)

    async def delete(self, user_id: str, campaign_id: str) -> bool | None:
        """Delete the campaign with everything of it (cascade): True; None when there is none;
        Refused while it is active."""
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                delete(_T).where(_mine(user_id, campaign_id), _T.c.status.in_(rules.DELETABLE))
            )
            if done.rowcount:
                return True
            state = (
                await conn.execute(select(_T.c.status).where(_mine(user_id, campaign_id)))
            ).scalar_one_or_none()
        if state is None:
            return None
        raise Refused(str(state))

    async def transition(
        self,
        user_id: str,
        campaign_id: str,
        action: rules.Action,
        *,
        now: float | None = None,
        version: int | None = None,
    ) -> tuple[CampaignRecord, bool] | None:
        """Apply a lifecycle action: (campaign after it, whether it changed); None when there is
        no such campaign; Refused when the state does not allow it; StaleVersion when
        ``version`` is given and the campaign moved on (a launch checked at one version never
        launches another). Launch also starts every pending lead (active, step 0, due now) in
        the same transaction."""
        at = time.time() if now is None else now
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    select(_T.c.status, _T.c.version).where(_mine(user_id, campaign_id))
                )
            ).first()
            if row is None:
                return None
            state, current = row
            if version is not None and current != version:
                raise StaleVersion(int(current))
            outcome = rules.apply(state, action)
            if outcome is None:
                raise Refused(str(state))
            if outcome.changed:
                values: dict[str, Any] = {"status": outcome.state, "updated_at": at}
                if action == "launch":
                    values["launched_at"] = at
                if outcome.state in rules.TERMINAL:
                    values["finished_at"] = at
                done = await conn.execute(
                    update(_T)
                    .where(
                        _mine(user_id, campaign_id),
                        _T.c.status == state,
                        true() if version is None else _T.c.version == version,
                    )
                    .values(**values, version=_T.c.version + 1)
                )
                if not done.rowcount:  # another transaction moved it first (PostgreSQL races)
                    moved = (
                        await conn.execute(select(_T.c.version).where(_mine(user_id, campaign_id)))
                    ).scalar_one_or_none()
                    if version is not None and moved is not None and moved != version:
                        raise StaleVersion(int(moved))
                    raise Refused(str(state))
                if action == "launch":
                    await conn.execute(
                        update(CampaignLead)
                        .where(
                            CampaignLead.campaign_id == campaign_id,
                            CampaignLead.status == "pending",
                        )
                        .values(status="active", next_position=0, due_at=at, updated_at=at)
                    )
            record = await self._get(conn, user_id, campaign_id)
            assert record is not None
            return record, outcome.changed
