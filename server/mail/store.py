"""Sending domains and aliases in the database (the I/O edge of :mod:`server.mail`).

Every query filters on the owner: another user's id reads as absent. DKIM private keys are
sealed (:mod:`server.mail.sealing`) before they are written and opened only to sign.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.models import MailAlias, MailDomain
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id
from server.mail.dns_check import DomainVerdict
from server.mail.dns_records import DkimKey, generate_dkim_key, new_selector
from server.mail.sealing import open_sealed, seal
from server.webhooks.mail_events import domain_check_event

__all__ = [
    "IN_USE_CHECKS",
    "MAX_DOMAINS",
    "AliasExists",
    "AliasRecord",
    "DomainExists",
    "DomainInUse",
    "DomainLimitReached",
    "DomainNotVerified",
    "DomainRecord",
    "MailStore",
    "RotationPending",
    "domain_in_use",
    "register_in_use_check",
]

MAX_DOMAINS = 100
"""Sending domains per user."""
MAX_ALIASES = 1000
"""Aliases per domain."""


class DomainNotVerified(Exception):
    """The domain is not (or no longer) verified, so it cannot send or carry aliases."""


class DomainExists(Exception):
    """The user already has this domain."""


class DomainLimitReached(Exception):
    """The user already has :data:`MAX_DOMAINS` domains (or the domain that many aliases)."""


class DomainInUse(Exception):
    """Something (a campaign) still sends from the domain; ``reasons`` says what."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


class RotationPending(Exception):
    """A rotated key is still waiting to be published and verified."""


class AliasExists(Exception):
    """The domain already has this local part."""


InUseCheck = Callable[[AsyncConnection, str, str], Awaitable[list[str]]]
"""``(conn, user_id, domain_id)`` → why the domain cannot be deleted (empty: no objection).
It runs on the delete's own write transaction, so nothing it reads can change before the
delete commits on SQLite (and it sees the same snapshot as the delete on PostgreSQL)."""

IN_USE_CHECKS: list[InUseCheck] = []
"""The registered checks, in order; add one with :func:`register_in_use_check` (the services
register the campaigns' one, :mod:`server.campaigns.domain_use`)."""


def register_in_use_check(check: InUseCheck) -> Callable[[], None]:
    """Register ``check`` (once: registering it again changes nothing); returns its removal."""
    if check not in IN_USE_CHECKS:
        IN_USE_CHECKS.append(check)

    def remove() -> None:
        if check in IN_USE_CHECKS:
            IN_USE_CHECKS.remove(check)

    return remove


async def domain_in_use(conn: AsyncConnection, user_id: str, domain_id: str) -> list[str]:
    """Why the domain cannot be deleted now (empty: it can)."""
    reasons: list[str] = []
    for check in list(IN_USE_CHECKS):
        reasons.extend(await check(conn, user_id, domain_id))
    return reasons


@dataclass(frozen=True)
class DomainRecord:
    """A sending domain as stored (the sealed private keys stay inside the store)."""

    id: str
    user_id: str
    name: str
    keys: tuple[DkimKey, ...]
    tracking: bool
    inbound: bool
    status: str
    checks: list[dict[str, Any]] | None
    checked_at: float | None
    verified_at: float | None
    created_at: float
    updated_at: float

    @property
    def active_key(self) -> DkimKey | None:
        """The key that signs."""
        return next((k for k in self.keys if k.state == "active"), None)


@dataclass(frozen=True)
class AliasRecord:
    """An address on a domain."""

    id: str
    user_id: str
    domain_id: str
    domain: str
    local_part: str
    display_name: str | None
    reply_to: str | None
    forwarding: list[dict[str, Any]]
    created_at: float
    updated_at: float

    @property
    def address(self) -> str:
        """``local@domain``."""
        return f"{self.local_part}@{self.domain}"


def _keys(raw: Any) -> tuple[DkimKey, ...]:
    return tuple(
        DkimKey(k["selector"], k["public_key"], k["state"], float(k["created_at"]))
        for k in (raw or [])
    )


def _domain(row: RowMapping) -> DomainRecord:
    return DomainRecord(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        keys=_keys(row["dkim_keys"]),
        tracking=bool(row["tracking"]),
        inbound=bool(row["inbound"]),
        status=row["status"],
        checks=row["checks"],
        checked_at=row["checked_at"],
        verified_at=row["verified_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _alias(row: RowMapping, domain: str) -> AliasRecord:
    return AliasRecord(
        id=row["id"],
        user_id=row["user_id"],
        domain_id=row["domain_id"],
        domain=domain,
        local_part=row["local_part"],
        display_name=row["display_name"],
        reply_to=row["reply_to"],
        forwarding=list(row["forwarding"] or []),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _key_entry(key: DkimKey, sealed: str) -> dict[str, Any]:
    return {
        "selector": key.selector,
        "public_key": key.public_key,
        "state": key.state,
        "created_at": key.created_at,
        "private_key": sealed,
    }


async def _new_key(
    seal_key: bytes, domain_id: str, prefix: str, state: str, now: float
) -> dict[str, Any]:
    pem, public = await asyncio.to_thread(generate_dkim_key)  # ~0.1 s of CPU: off the loop
    key = DkimKey(new_selector(prefix, now), public, state, now)  # type: ignore[arg-type]
    return _key_entry(key, seal(seal_key, pem, f"{domain_id}/{key.selector}"))


def after_check(
    entries: list[dict[str, Any]], status: str, result: DomainVerdict, pending_ok: bool
) -> tuple[list[dict[str, Any]], str]:
    """The keys and status after a DNS check (pure): a published pending key becomes active and
    the previous one retiring; a failed lookup leaves a verified domain verified."""
    if pending_ok and any(e["state"] == "pending" for e in entries):
        entries = [
            {**e, "state": {"active": "retiring", "pending": "active"}.get(e["state"], e["state"])}
            for e in entries
        ]
    if result == "verified":
        return entries, "verified"
    if result == "lookup_failed" and status == "verified":
        return entries, "verified"
    return entries, "pending"


class MailStore:
    """Domains and aliases of every user on ``engine``; ``seal_key`` seals DKIM private keys."""

    def __init__(self, engine: AsyncEngine, seal_key: bytes, selector_prefix: str = "bavlio"):
        self.engine = engine
        self.seal_key = seal_key
        self.selector_prefix = selector_prefix

    # -- domains ---------------------------------------------------------------------------

    async def create_domain(
        self, user_id: str, name: str, *, tracking: bool, inbound: bool
    ) -> DomainRecord:
        """A new domain with a fresh active DKIM key; DomainExists / DomainLimitReached."""
        async with read_connection(self.engine) as conn:  # refuse before the costly key
            names = (
                await conn.execute(
                    select(MailDomain.name)
                    .where(MailDomain.user_id == user_id)
                    .limit(MAX_DOMAINS + 1)
                )
            ).scalars()
            taken = set(names)
        if name in taken:
            raise DomainExists
        if len(taken) >= MAX_DOMAINS:
            raise DomainLimitReached
        now = time.time()
        domain_id = new_id("dom", now=now)
        entry = await _new_key(self.seal_key, domain_id, self.selector_prefix, "active", now)
        values = {
            "id": domain_id,
            "user_id": user_id,
            "name": name,
            "dkim_keys": [entry],
            "tracking": tracking,
            "inbound": inbound,
            "status": "not_started",
            "checks": None,
            "checked_at": None,
            "verified_at": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with write_transaction(self.engine) as conn:
                count = len(
                    (
                        await conn.execute(
                            select(MailDomain.id)
                            .where(MailDomain.user_id == user_id)
                            .limit(MAX_DOMAINS)
                        )
                    ).all()
                )
                if count >= MAX_DOMAINS:
                    raise DomainLimitReached
                await conn.execute(insert(MailDomain).values(**values))
        except IntegrityError:
            raise DomainExists from None
        record = await self.domain(user_id, domain_id)
        assert record is not None
        return record

    async def domains(
        self, user_id: str, *, limit: int, offset: int = 0, after: str | None = None
    ) -> list[DomainRecord]:
        """The user's domains, newest first."""
        query = select(MailDomain.__table__).where(MailDomain.user_id == user_id)
        query = newest_first(query, MailDomain.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_domain(row) for row in rows]

    async def domain(self, user_id: str, domain_id: str) -> DomainRecord | None:
        """The user's domain, or None."""
        query = select(MailDomain.__table__).where(
            MailDomain.id == domain_id, MailDomain.user_id == user_id
        )
        async with read_connection(self.engine) as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _domain(row)

    async def domain_by_name(self, user_id: str, name: str) -> DomainRecord | None:
        """The user's domain called ``name`` (lower case), or None."""
        query = select(MailDomain.__table__).where(
            MailDomain.user_id == user_id, MailDomain.name == name
        )
        async with read_connection(self.engine) as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _domain(row)

    async def update_domain(
        self, user_id: str, domain_id: str, *, tracking: bool | None, inbound: bool | None
    ) -> DomainRecord | None:
        """Switch tracking and inbound; None when the user has no such domain."""
        values: dict[str, Any] = {"updated_at": time.time()}
        if tracking is not None:
            values["tracking"] = tracking
        if inbound is not None:
            values["inbound"] = inbound
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(MailDomain)
                .where(MailDomain.id == domain_id, MailDomain.user_id == user_id)
                .values(**values)
            )
        return await self.domain(user_id, domain_id)

    async def delete_domain(self, user_id: str, domain_id: str) -> DomainRecord | None:
        """Delete the domain and its aliases; DomainInUse when a check refuses; None if absent."""
        record = await self.domain(user_id, domain_id)
        if record is None:
            return None
        async with write_transaction(self.engine) as conn:
            reasons = await domain_in_use(conn, user_id, domain_id)
            if reasons:
                raise DomainInUse(reasons)
            await conn.execute(
                delete(MailAlias).where(
                    MailAlias.domain_id == domain_id, MailAlias.user_id == user_id
                )
            )
            await conn.execute(
                delete(MailDomain).where(MailDomain.id == domain_id, MailDomain.user_id == user_id)
            )
        return record

    async def _entries(self, conn: Any, user_id: str, domain_id: str) -> RowMapping | None:
        query = select(MailDomain.__table__).where(
            MailDomain.id == domain_id, MailDomain.user_id == user_id
        )
        row: RowMapping | None = (await conn.execute(query)).mappings().first()
        return row

    async def rotate_key(self, user_id: str, domain_id: str) -> DomainRecord | None:
        """Add a pending key under a new selector (it signs once its record verifies; the old
        one then retires but stays listed until :meth:`retire_keys`). RotationPending when one
        is already waiting; None if absent."""
        now = time.time()
        entry = await _new_key(self.seal_key, domain_id, self.selector_prefix, "pending", now)
        async with write_transaction(self.engine) as conn:
            row = await self._entries(conn, user_id, domain_id)
            if row is None:
                return None
            entries = list(row["dkim_keys"] or [])
            if any(e["state"] == "pending" for e in entries):
                raise RotationPending
            await conn.execute(
                update(MailDomain)
                .where(MailDomain.id == domain_id)
                .values(dkim_keys=[*entries, entry], updated_at=now)
            )
        return await self.domain(user_id, domain_id)

    async def retire_keys(self, user_id: str, domain_id: str) -> DomainRecord | None:
        """Forget the retiring keys (their records may then be removed from DNS)."""
        async with write_transaction(self.engine) as conn:
            row = await self._entries(conn, user_id, domain_id)
            if row is None:
                return None
            entries = [e for e in (row["dkim_keys"] or []) if e["state"] != "retiring"]
            await conn.execute(
                update(MailDomain)
                .where(MailDomain.id == domain_id)
                .values(dkim_keys=entries, updated_at=time.time())
            )
        return await self.domain(user_id, domain_id)

    async def record_check(
        self,
        user_id: str,
        domain_id: str,
        checks: list[dict[str, Any]],
        result: DomainVerdict,
        *,
        pending_ok: bool,
    ) -> DomainRecord | None:
        """Store a DNS check and its consequences (status, verified_at, key promotion)."""
        now = time.time()
        async with write_transaction(self.engine) as conn:
            row = await self._entries(conn, user_id, domain_id)
            if row is None:
                return None
            entries, status = after_check(
                list(row["dkim_keys"] or []), row["status"], result, pending_ok
            )
            verified_at = row["verified_at"]
            if status == "verified" and row["status"] != "verified":
                verified_at = now
            await conn.execute(
                update(MailDomain)
                .where(MailDomain.id == domain_id)
                .values(
                    dkim_keys=entries,
                    status=status,
                    checks=checks,
                    checked_at=now,
                    verified_at=verified_at,
                    updated_at=now,
                )
            )
            await domain_check_event(
                conn,
                user_id,
                domain_id=domain_id,
                name=str(row["name"]),
                before=str(row["status"]),
                after=status,
                checks=checks,
                at=now,
            )
        return await self.domain(user_id, domain_id)

    async def private_key(self, user_id: str, domain_id: str, selector: str) -> bytes | None:
        """The PEM of the domain's key ``selector`` (opened from its seal), or None."""
        async with read_connection(self.engine) as conn:
            row = await self._entries(conn, user_id, domain_id)
        if row is None:
            return None
        for entry in row["dkim_keys"] or []:
            if entry["selector"] == selector:
                return open_sealed(self.seal_key, entry["private_key"], f"{domain_id}/{selector}")
        return None

    # -- aliases ---------------------------------------------------------------------------

    async def create_alias(
        self,
        user_id: str,
        domain_id: str,
        local_part: str,
        *,
        display_name: str | None,
        reply_to: str | None,
        forwarding: list[dict[str, Any]],
    ) -> AliasRecord | None:
        """A new alias; None when the domain is absent; DomainNotVerified, AliasExists,
        DomainLimitReached."""
        now = time.time()
        alias_id = new_id("alias", now=now)
        try:
            async with write_transaction(self.engine) as conn:
                row = await self._entries(conn, user_id, domain_id)
                if row is None:
                    return None
                if row["status"] != "verified":
                    raise DomainNotVerified(row["name"])
                count = len(
                    (
                        await conn.execute(
                            select(MailAlias.id)
                            .where(MailAlias.domain_id == domain_id)
                            .limit(MAX_ALIASES)
                        )
                    ).all()
                )
                if count >= MAX_ALIASES:
                    raise DomainLimitReached
                await conn.execute(
                    insert(MailAlias).values(
                        id=alias_id,
                        user_id=user_id,
                        domain_id=domain_id,
                        local_part=local_part,
                        display_name=display_name,
                        reply_to=reply_to,
                        forwarding=forwarding,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AliasExists from None
        return await self.alias(user_id, alias_id)

    def _alias_query(self, user_id: str) -> Any:
        return (
            select(MailAlias.__table__, MailDomain.name.label("domain_name"))
            .join(MailDomain, MailDomain.id == MailAlias.domain_id)
            .where(MailAlias.user_id == user_id)
        )

    async def aliases(
        self,
        user_id: str,
        *,
        limit: int,
        offset: int = 0,
        after: str | None = None,
        domain_id: str | None = None,
    ) -> list[AliasRecord]:
        """The user's aliases (of one domain if given), newest first."""
        query = self._alias_query(user_id)
        if domain_id is not None:
            query = query.where(MailAlias.domain_id == domain_id)
        query = newest_first(query, MailAlias.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_alias(row, row["domain_name"]) for row in rows]

    async def alias(self, user_id: str, alias_id: str) -> AliasRecord | None:
        """The user's alias, or None."""
        query = self._alias_query(user_id).where(MailAlias.id == alias_id)
        async with read_connection(self.engine) as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _alias(row, row["domain_name"])

    async def alias_by_local_part(self, domain_id: str, local_part: str) -> AliasRecord | None:
        """The domain's alias for ``local_part``, or None."""
        query = (
            select(MailAlias.__table__, MailDomain.name.label("domain_name"))
            .join(MailDomain, MailDomain.id == MailAlias.domain_id)
            .where(MailAlias.domain_id == domain_id, MailAlias.local_part == local_part)
        )
        async with read_connection(self.engine) as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _alias(row, row["domain_name"])

    async def update_alias(
        self, user_id: str, alias_id: str, changes: dict[str, Any]
    ) -> AliasRecord | None:
        """Change display_name / reply_to / forwarding; None when absent."""
        allowed = {
            k: v for k, v in changes.items() if k in ("display_name", "reply_to", "forwarding")
        }
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                update(MailAlias)
                .where(MailAlias.id == alias_id, MailAlias.user_id == user_id)
                .values(**allowed, updated_at=time.time())
            )
        return await self.alias(user_id, alias_id)

    async def delete_alias(self, user_id: str, alias_id: str) -> AliasRecord | None:
        """Delete the alias; None when absent."""
        record = await self.alias(user_id, alias_id)
        if record is None:
            return None
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                delete(MailAlias).where(MailAlias.id == alias_id, MailAlias.user_id == user_id)
            )
        return record
