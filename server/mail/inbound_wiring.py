"""The real implementations of inbound mail's ports: routing from the sending domains table
(verified domains with inbound on) and hard bounces into the suppression list."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db.models import MailDomain
from server.db.tx import read_connection
from server.suppression.normalise import InvalidValue, normalise_email
from server.suppression.store import SuppressionStore

__all__ = ["DomainRouting", "SuppressionListSink"]


class DomainRouting:
    """A recipient domain belongs to the user whose verified domain of that name has inbound
    on (verification proves control of the DNS, so two users cannot both hold it verified;
    should that ever happen, the most recently verified wins)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def owner(self, domain: str) -> str | None:
        """The owning user id, or None (the SMTP endpoint then refuses the recipient)."""
        name = domain.lower().rstrip(".")
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(MailDomain.user_id)
                    .where(
                        MailDomain.name == name,
                        MailDomain.inbound.is_(True),
                        MailDomain.status == "verified",
                    )
                    .order_by(MailDomain.verified_at.desc())
                    .limit(1)
                )
            ).first()
        return str(row.user_id) if row else None


class SuppressionListSink:
    """Hard bounces become suppression entries (source ``bounce``; idempotent)."""

    def __init__(self, store: SuppressionStore) -> None:
        self.store = store

    async def add_hard_bounce(
        self, user_id: str, address: str, *, status: str | None, sent_message_id: str | None
    ) -> None:
        """Suppress ``address`` for ``user_id``; the reason names the DSN status and message."""
        try:
            value = normalise_email(address)
        except InvalidValue:
            return  # a DSN naming no usable address: nothing to suppress
        reason = f"hard bounce {status or ''}".strip()
        if sent_message_id:
            reason += f" (message {sent_message_id})"
        await self.store.add(user_id, "email", value, reason=reason[:500], source="bounce")
