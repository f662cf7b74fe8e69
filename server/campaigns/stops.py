"""Stopping a lead's sequence from inbound mail: a reply in the lead's thread (``replied``), a
hard bounce of one of its messages (``bounced``); and at send time, the relay's permanent refusal
of its recipient (``bounced`` too, through the outbox's refusal hook: :func:`on_refused`). Automatic replies (out of office and the
other RFC 3834 kinds :mod:`server.mail.autoreply` recognises) are not replies.

Wired into inbound mail by :func:`with_campaign_stops`: a hook on the inbound store (after a
message is filed, its In-Reply-To/References are matched against the Message-IDs of campaign
sends and the leads' thread ids) and a wrapper of the hard-bounce sink (the bounced outbox
message is matched to its campaign send). A reply to a lead whose campaign does not stop
on reply is still recorded as a ``replied`` event, and so is one after the lead finished.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.campaigns.sequencer_store import stop_lead
from server.db.models import Campaign, CampaignLead, CampaignSend, MailMessage
from server.db.tx import read_connection, write_transaction
from server.mail.inbound_ports import SuppressionSink
from server.mail.inbound_service import InboundMail
from server.mail.inbound_store import InboundRow, InboundStore
from server.mail.threads import candidate_ids

__all__ = [
    "CampaignBounceSink",
    "leads_in_thread",
    "on_bounce",
    "on_refused",
    "on_reply",
    "with_campaign_stops",
]

_MAX_CANDIDATES = 20


def _bracketed(ids: Sequence[str]) -> list[str]:
    return [i if i.startswith("<") else f"<{i}>" for i in ids if i][:_MAX_CANDIDATES]


async def leads_in_thread(
    engine: AsyncEngine, user_id: str, message_ids: Sequence[str]
) -> list[tuple[str, str, bool]]:
    """(lead id, campaign id, campaign stops on reply) of the user's leads whose campaign
    messages or thread id are among ``message_ids`` (with or without angle brackets)."""
    wanted = _bracketed(message_ids)
    if not wanted:
        return []
    leads = CampaignLead.__table__.c
    sends = CampaignSend.__table__.c
    campaigns = Campaign.__table__.c
    by_send = (
        sa.select(sends.lead_id)
        .join(MailMessage, MailMessage.id == sends.email_id)
        .where(MailMessage.message_id.in_(wanted), MailMessage.user_id == user_id)
    )
    query = (
        sa.select(leads.id, leads.campaign_id, campaigns.stop_on_reply)
        .join(Campaign, campaigns.id == leads.campaign_id)
        .where(
            leads.user_id == user_id,
            sa.or_(leads.thread_message_id.in_(wanted), leads.id.in_(by_send)),
        )
    )
    async with read_connection(engine) as conn:
        rows = (await conn.execute(query)).all()
    return [(r.id, r.campaign_id, bool(r.stop_on_reply)) for r in rows]


async def on_reply(engine: AsyncEngine, row: InboundRow) -> int:
    """A filed inbound message: stop the leads whose thread it answers (not a DSN, not an
    automatic reply), as of its receipt; the number of leads stopped."""
    if row.kind != "message" or row.auto_reply is not None:
        return 0
    ids = candidate_ids(None, row.in_reply_to, row.references)
    found = await leads_in_thread(engine, row.user_id, ids)
    stopped = 0
    for lead_id, campaign_id, stops in found:
        async with write_transaction(engine) as conn:
            stopped += await stop_lead(
                conn,
                lead_id,
                campaign_id,
                reason="replied",
                now=row.received_at,
                email_id=row.id,
                stop=stops,
            )
    return stopped


async def on_bounce(
    engine: AsyncEngine,
    user_id: str,
    sent_email_id: str,
    status: str | None,
    now: float | None = None,
) -> bool:
    """A hard bounce of outbox message ``sent_email_id``: stop its campaign lead."""
    sends = CampaignSend.__table__.c
    async with read_connection(engine) as conn:
        row = (
            await conn.execute(
                sa.select(sends.lead_id, sends.campaign_id, sends.position)
                .join(MailMessage, MailMessage.id == sends.email_id)
                .where(sends.email_id == sent_email_id, MailMessage.user_id == user_id)
            )
        ).first()
    if row is None:
        return False
    async with write_transaction(engine) as conn:
        return await stop_lead(
            conn,
            row.lead_id,
            row.campaign_id,
            reason="bounced",
            now=time.time() if now is None else now,
            email_id=sent_email_id,
            position=row.position,
            detail={"status": status} if status else None,
        )


async def on_refused(
    conn: AsyncConnection, user_id: str, email_id: str, refused: Mapping[str, str], now: float
) -> None:
    """The relay permanently refused the recipient of outbox message ``email_id`` at send
    time: in the outcome's transaction, stop its campaign lead as a hard bounce would
    (``bounced``, the event once, its detail the relay's reply). Not a campaign send: nothing."""
    sends = CampaignSend.__table__.c
    row = (
        await conn.execute(
            sa.select(sends.lead_id, sends.campaign_id, sends.position, CampaignLead.email)
            .join(MailMessage, MailMessage.id == sends.email_id)
            .join(CampaignLead, CampaignLead.id == sends.lead_id)
            .where(sends.email_id == email_id, MailMessage.user_id == user_id)
        )
    ).first()
    if row is None:
        return
    reply = refused.get(row.email) or next(iter(refused.values()), "")
    await stop_lead(
        conn,
        row.lead_id,
        row.campaign_id,
        reason="bounced",
        now=now,
        email_id=email_id,
        position=row.position,
        detail={"status": reply[:300], "source": "relay"},
    )


class CampaignBounceSink:
    """A hard-bounce sink that passes each bounce on (suppression) and stops its lead."""

    def __init__(self, inner: SuppressionSink, engine: AsyncEngine) -> None:
        self.inner = inner
        self.engine = engine

    async def add_hard_bounce(
        self, user_id: str, address: str, *, status: str | None, sent_message_id: str | None
    ) -> None:
        """Suppress (the inner sink), then stop the campaign lead the message went to."""
        await self.inner.add_hard_bounce(
            user_id, address, status=status, sent_message_id=sent_message_id
        )
        if sent_message_id:
            await on_bounce(self.engine, user_id, sent_message_id, status)


def with_campaign_stops(inbound: InboundMail) -> InboundMail:
    """``inbound`` with the campaign stops plugged in: replies through an ``after_add`` hook of
    its store, hard bounces through :class:`CampaignBounceSink` around its suppression sink."""
    store = inbound.store
    return replace(
        inbound,
        store=InboundStore(store.engine, (*store.after_add, partial(on_reply, store.engine))),
        suppression=CampaignBounceSink(inbound.suppression, store.engine),
    )
