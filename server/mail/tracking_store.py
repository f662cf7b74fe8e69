"""Tracked links and open/click events in the database (the I/O edge of
:mod:`server.mail.tracking`); reads for the owner take the owner, so another user's email is not
found."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.models import MailEvent, MailLink, MailMessage
from server.db.tx import read_connection, write_transaction
from server.ids import new_id
from server.mail.tracking import HUMAN, Actor, classify_click, classify_open
from server.webhooks.mail_events import tracking_event

__all__ = ["MAX_EVENTS_PER_EMAIL", "ClickEvent", "LinkStats", "TrackingStore", "save_links"]

_MAX_AGENT = 512
MAX_EVENTS_PER_EMAIL = 1000
"""Opens (and, apart, clicks) stored per message: the pixel and the links are public, so one
copy of a message could otherwise write rows without end; later ones are answered, not kept."""


@dataclass(frozen=True)
class LinkStats:
    """A tracked link and its clicks, people apart from machines."""

    index: int
    url: str
    clicks: int
    machine_clicks: int


@dataclass(frozen=True)
class ClickEvent:
    """One click: which link, who (``person`` or a machine kind), when."""

    id: str
    index: int | None
    url: str | None
    actor: str
    user_agent: str | None
    at: float


async def save_links(conn: AsyncConnection, email_id: str, urls: Sequence[str]) -> None:
    """Store a message's tracked links in the transaction that stores the message."""
    if urls:
        await conn.execute(
            sa.insert(MailLink),
            [{"email_id": email_id, "idx": i, "url": url} for i, url in enumerate(urls)],
        )


class TrackingStore:
    """Records opens and clicks; answers the owner's link and click views."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def opened(
        self, email_id: str, user_agent: str, address: str | None, now: float | None = None
    ) -> Actor | None:
        """Record an open of ``email_id`` (None when no such message)."""
        actor = classify_open(user_agent, address)
        at = time.time() if now is None else now
        async with write_transaction(self.engine) as conn:
            owner = (
                await conn.execute(sa.select(MailMessage.user_id).where(MailMessage.id == email_id))
            ).first()
            if owner is None:
                return None
            event_id = await self._event(conn, email_id, "open", None, actor, user_agent, at)
            if event_id is None:  # this message's fill of opens is stored: answered, not kept
                return actor
            await tracking_event(
                conn,
                str(owner.user_id),
                event_id=event_id,
                email_id=email_id,
                kind="open",
                actor=actor.value,
                at=at,
            )
        return actor

    async def clicked(
        self,
        email_id: str,
        index: int,
        user_agent: str,
        method: str,
        now: float | None = None,
    ) -> tuple[str, Actor] | None:
        """Record a click on link ``index`` and answer its URL (None when there is no such
        link: the redirect is then a 404, never a guess)."""
        at = time.time() if now is None else now
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.select(MailLink.url, MailMessage.handed_off_at, MailMessage.user_id)
                    .join(MailMessage, MailMessage.id == MailLink.email_id)
                    .where(MailLink.email_id == email_id, MailLink.idx == index)
                )
            ).first()
            if row is None:
                return None
            opened = (
                await conn.execute(
                    sa.select(MailEvent.id)
                    .where(
                        MailEvent.email_id == email_id,
                        MailEvent.kind == "open",
                        MailEvent.actor.in_([a.value for a in HUMAN]),
                    )
                    .limit(1)
                )
            ).first()
            since = at - row.handed_off_at if row.handed_off_at is not None else None
            actor = classify_click(user_agent, method, since, opened is not None)
            event_id = await self._event(conn, email_id, "click", index, actor, user_agent, at)
            if event_id is None:  # this message's fill of clicks is stored: redirected, not kept
                return str(row.url), actor
            await tracking_event(
                conn,
                str(row.user_id),
                event_id=event_id,
                email_id=email_id,
                kind="click",
                actor=actor.value,
                at=at,
                link_index=index,
                url=str(row.url),
            )
        return str(row.url), actor

    @staticmethod
    async def _event(
        conn: AsyncConnection,
        email_id: str,
        kind: str,
        index: int | None,
        actor: Actor,
        user_agent: str,
        now: float | None,
    ) -> str | None:
        """Store the event and answer its id; None once the message has its fill of them."""
        stored = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.select(MailEvent.id)
                    .where(MailEvent.email_id == email_id, MailEvent.kind == kind)
                    .limit(MAX_EVENTS_PER_EMAIL)
                    .subquery()
                )
            )
        ).scalar_one()
        if stored >= MAX_EVENTS_PER_EMAIL:
            return None
        event_id = new_id("evt")
        await conn.execute(
            sa.insert(MailEvent).values(
                id=event_id,
                email_id=email_id,
                kind=kind,
                link_idx=index,
                actor=actor.value,
                user_agent=user_agent[:_MAX_AGENT] or None,
                at=time.time() if now is None else now,
            )
        )
        return event_id

    async def _owned(self, conn: AsyncConnection, user_id: str, email_id: str) -> bool:
        found = await conn.execute(
            sa.select(MailMessage.id).where(
                MailMessage.id == email_id, MailMessage.user_id == user_id
            )
        )
        return found.first() is not None

    async def links(self, user_id: str, email_id: str) -> list[LinkStats] | None:
        """The owner's message's links with click counts (None when not the owner's)."""
        human = MailEvent.actor.in_([a.value for a in HUMAN])
        person = sa.func.sum(sa.case((human, 1), else_=0))
        machine = sa.func.sum(
            sa.case((sa.and_(MailEvent.id.is_not(None), sa.not_(human)), 1), else_=0)
        )
        async with read_connection(self.engine) as conn:
            if not await self._owned(conn, user_id, email_id):
                return None
            rows = await conn.execute(
                sa.select(MailLink.idx, MailLink.url, person, machine)
                .outerjoin(
                    MailEvent,
                    sa.and_(
                        MailEvent.email_id == MailLink.email_id,
                        MailEvent.link_idx == MailLink.idx,
                        MailEvent.kind == "click",
                    ),
                )
                .where(MailLink.email_id == email_id)
                .group_by(MailLink.idx, MailLink.url)
                .order_by(MailLink.idx)
            )
            return [LinkStats(r[0], r[1], int(r[2] or 0), int(r[3] or 0)) for r in rows]

    async def clicks(
        self, user_id: str, email_id: str, *, limit: int, offset: int = 0
    ) -> list[ClickEvent] | None:
        """The owner's message's clicks, oldest first (None when not the owner's)."""
        async with read_connection(self.engine) as conn:
            if not await self._owned(conn, user_id, email_id):
                return None
            rows = await conn.execute(
                sa.select(
                    MailEvent.id,
                    MailEvent.link_idx,
                    MailLink.url,
                    MailEvent.actor,
                    MailEvent.user_agent,
                    MailEvent.at,
                )
                .outerjoin(
                    MailLink,
                    sa.and_(
                        MailLink.email_id == MailEvent.email_id,
                        MailLink.idx == MailEvent.link_idx,
                    ),
                )
                .where(MailEvent.email_id == email_id, MailEvent.kind == "click")
                .order_by(MailEvent.at, MailEvent.id)
                .limit(limit)
                .offset(offset)
            )
            return [ClickEvent(*row) for row in rows]

    async def opens(self, email_id: str) -> tuple[int, int]:
        """(person opens, machine opens) of a message."""
        async with read_connection(self.engine) as conn:
            rows = await conn.execute(
                sa.select(MailEvent.actor, sa.func.count())
                .where(MailEvent.email_id == email_id, MailEvent.kind == "open")
                .group_by(MailEvent.actor)
            )
            counts = {str(actor): int(n) for actor, n in rows}
        people = sum(counts.pop(a.value, 0) for a in HUMAN)
        return people, sum(counts.values())
