"""Campaign unsubscribes: the signed link every campaign message carries (in its body and in the
RFC 8058 ``List-Unsubscribe`` header) and the public endpoint behind it.

The token is the tracking token of kind ``u`` (HMAC, :mod:`server.mail.tracking`) naming the
campaign lead, so it cannot be forged or pointed at another lead. ``POST /u/{token}`` is the
RFC 8058 one-click unsubscribe (what mailbox providers call); ``GET`` only shows a page with a
button that posts, because link scanners fetch every URL in a message and must not unsubscribe
anyone. Unsubscribing adds the address to the campaign owner's suppression list, stops the lead
and records one ``unsubscribed`` campaign event; doing it again changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from server.db.models import CampaignLead, CampaignSend
from server.db.tx import read_connection, write_transaction
from server.errors import NotFound
from server.mail.tracking import TokenError, make_token, read_token

__all__ = [
    "Unsubscribed",
    "read_unsubscribe_token",
    "unsubscribe_lead",
    "unsubscribe_routes",
    "unsubscribe_url",
]

_NO_STORE = {"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"}
_MAX_BODY = 4096


def unsubscribe_url(base_url: str, key: bytes, lead_id: str) -> str:
    """The lead's one-click unsubscribe URL under ``base_url`` (the public https address)."""
    return f"{base_url.rstrip('/')}/u/{make_token(key, 'u', lead_id)}"


def read_unsubscribe_token(key: bytes, token: str) -> str:
    """The lead id a token names; TokenError when forged or malformed."""
    lead_id, _ = read_token(key, token, "u")
    return lead_id


@dataclass(frozen=True)
class Unsubscribed:
    """The outcome: whether this call stopped the lead (False: it was not running)."""

    lead_id: str
    stopped: bool


async def unsubscribe_lead(engine: AsyncEngine, lead_id: str, now: float) -> Unsubscribed | None:
    """Suppress the lead's address for its owner, stop the lead and record the event (the
    related message is the lead's latest send); None for an unknown lead."""
    from server.campaigns.sequencer_store import stop_lead
    from server.suppression.normalise import InvalidValue, normalise_email
    from server.suppression.store import SuppressionStore

    leads = CampaignLead.__table__.c
    async with read_connection(engine) as conn:
        lead = (
            await conn.execute(
                sa.select(leads.user_id, leads.email, leads.campaign_id).where(leads.id == lead_id)
            )
        ).first()
        if lead is None:
            return None
        sends = CampaignSend.__table__.c
        last = (
            await conn.execute(
                sa.select(sends.email_id, sends.position)
                .where(sends.lead_id == lead_id)
                .order_by(sends.position.desc())
                .limit(1)
            )
        ).first()
    try:
        value = normalise_email(lead.email)
    except InvalidValue:
        value = None
    if value is not None:
        await SuppressionStore(engine).add(
            lead.user_id, "email", value, reason="unsubscribed (campaign)", source="unsubscribe"
        )
    async with write_transaction(engine) as conn:
        stopped = await stop_lead(
            conn,
            lead_id,
            lead.campaign_id,
            reason="unsubscribed",
            now=now,
            email_id=last.email_id if last else None,
            position=last.position if last else None,
        )
    return Unsubscribed(lead_id, stopped)


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width"></head><body style="font-family:sans-serif">
<h1>{title}</h1>{body}</body></html>"""


def _lead_of(request: Request) -> str:
    from server.services import services

    token = str(request.path_params["token"])
    try:
        return read_unsubscribe_token(services(request).keyed.tracking_key, token)
    except TokenError:
        raise NotFound("unsubscribe_link_not_found", "No such unsubscribe link.") from None


async def confirm_page(request: Request) -> Response:
    """GET: a page whose button posts the unsubscribe (GET itself changes nothing)."""
    _lead_of(request)
    body = (
        '<form method="post"><p>Stop receiving these emails?</p>'
        '<button type="submit" name="List-Unsubscribe" value="One-Click">Unsubscribe</button>'
        "</form>"
    )
    return HTMLResponse(_PAGE.format(title="Unsubscribe", body=body), headers=_NO_STORE)


async def one_click(request: Request) -> Response:
    """POST (RFC 8058 one-click, or the page's button): unsubscribe."""
    from server.services import services

    lead_id = _lead_of(request)
    size = 0
    async for chunk in request.stream():  # the body is not needed: bound what is read
        size += len(chunk)
        if size > _MAX_BODY:
            break
    done = await unsubscribe_lead(services(request).db.engine, lead_id, time.time())
    if done is None:
        raise NotFound("unsubscribe_link_not_found", "No such unsubscribe link.")
    body = "<p>You are unsubscribed and will not receive further emails from this sender.</p>"
    return HTMLResponse(_PAGE.format(title="Unsubscribed", body=body), headers=_NO_STORE)


def unsubscribe_routes() -> list[BaseRoute]:
    """``GET /u/{token}`` (confirmation page) and ``POST /u/{token}`` (one click)."""
    return [
        Route("/u/{token}", confirm_page, methods=["GET"], name="campaign_unsubscribe_page"),
        Route("/u/{token}", one_click, methods=["POST"], name="campaign_unsubscribe"),
    ]
