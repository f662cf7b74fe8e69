"""Campaigns that still send from a domain (a domain-delete refusal reason, registered with
:func:`server.mail.store.register_in_use_check` by the services).

A campaign uses a domain while it is
draft, active or paused and one of its ``sender_alias_ids`` is an alias on the domain.
``sender_alias_ids`` is a JSON list; it is matched in Python so the query is the same on SQLite
and PostgreSQL (a user has few campaigns in those states).
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.engine import Database
from server.db.models import Campaign, MailAlias
from server.db.tx import read_connection

__all__ = ["LIVE_STATES", "campaign_reasons", "campaigns_on_domain", "campaigns_using_domain"]

LIVE_STATES = ("draft", "active", "paused")
"""Campaign states that may still send (completed and cancelled ones never do)."""

_MAX_NAMED = 5
"""Campaigns named in a refusal; more are counted."""

_CAMPAIGNS = cast(sa.Table, Campaign.__table__)
_ALIASES = cast(sa.Table, MailAlias.__table__)


async def campaigns_on_domain(
    conn: AsyncConnection, user_id: str, domain_id: str
) -> list[tuple[str, str]]:
    """``(id, name)`` of the user's live campaigns sending from an alias of ``domain_id``."""
    aliases = {
        str(a)
        for a in (
            await conn.execute(
                sa.select(_ALIASES.c.id).where(
                    _ALIASES.c.domain_id == domain_id, _ALIASES.c.user_id == user_id
                )
            )
        ).scalars()
    }
    if not aliases:
        return []
    rows = await conn.execute(
        sa.select(_CAMPAIGNS.c.id, _CAMPAIGNS.c.name, _CAMPAIGNS.c.sender_alias_ids)
        .where(_CAMPAIGNS.c.user_id == user_id, _CAMPAIGNS.c.status.in_(LIVE_STATES))
        .order_by(_CAMPAIGNS.c.id)
    )
    return [
        (str(row.id), str(row.name)) for row in rows if aliases & _alias_ids(row.sender_alias_ids)
    ]


def _alias_ids(value: Any) -> set[str]:
    """The alias ids of a stored ``sender_alias_ids`` (anything not a list of strings: none)."""
    if not isinstance(value, list):
        return set()
    return {v for v in value if isinstance(v, str)}


async def campaign_reasons(conn: AsyncConnection, user_id: str, domain_id: str) -> list[str]:
    """The in-use check for campaigns: one reason naming the campaigns (the first few)."""
    found = await campaigns_on_domain(conn, user_id, domain_id)
    if not found:
        return []
    named = ", ".join(f"{cid} ({name[:60]})" for cid, name in found[:_MAX_NAMED])
    more = f" and {len(found) - _MAX_NAMED} more" if len(found) > _MAX_NAMED else ""
    noun = "campaign" if len(found) == 1 else "campaigns"
    return [f"{noun} {named}{more} send from it"]


async def campaigns_using_domain(
    conn_or_db: AsyncEngine | Database, user_id: str, domain_id: str
) -> list[str]:
    """Ids of the user's draft, active or paused campaigns that send from an alias of
    ``domain_id`` (the query the domain-delete refusal runs in its own transaction)."""
    engine = conn_or_db.engine if isinstance(conn_or_db, Database) else conn_or_db
    async with read_connection(engine) as conn:
        return [cid for cid, _ in await campaigns_on_domain(conn, user_id, domain_id)]
