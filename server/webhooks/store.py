"""Webhook endpoints and deliveries in the database (the I/O edge of :mod:`.rules`).

Signing secrets are sealed at rest (AES-GCM under a key derived from the master secret, bound
to the endpoint id); the raw secret is shown when made or rotated and otherwise only opened to
sign. :meth:`WebhookStore.emit` is how the rest of the server raises an event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, delete, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.db.models import WebhookDelivery, WebhookEndpoint
from server.db.paging import newest_first
from server.db.tx import read_connection, write_transaction
from server.ids import new_id
from server.mail.sealing import open_sealed, seal
from server.webhooks.rules import DeliveryState, after_attempt, endpoint_after, is_success
from server.webhooks.signing import new_secret

__all__ = [
    "MAX_ENDPOINTS",
    "DeliveryRecord",
    "DueDelivery",
    "EndpointLimitReached",
    "EndpointRecord",
    "WebhookStore",
    "queue_event",
]

MAX_ENDPOINTS = 20
"""Endpoints per user (the 21st is refused until one is deleted)."""


class EndpointLimitReached(Exception):
    """The user already has :data:`MAX_ENDPOINTS` endpoints."""


@dataclass(frozen=True)
class EndpointRecord:
    """An endpoint as its owner sees it (never the secret)."""

    id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    enabled: bool
    disabled_at: float | None
    disabled_reason: str | None
    consecutive_failures: int
    last_success_at: float | None
    last_failure_at: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery as its owner sees it: event, state, attempts, last outcome."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery: where it goes, its body, and the secret to sign it with."""

    id: str
    endpoint_id: str
    url: str
    secret: str
    body: bytes
    attempts: int


_ENDPOINT = (
    WebhookEndpoint.id,
    WebhookEndpoint.url,
    WebhookEndpoint.description,
    WebhookEndpoint.event_types,
    WebhookEndpoint.enabled,
    WebhookEndpoint.disabled_at,
    WebhookEndpoint.disabled_reason,
    WebhookEndpoint.consecutive_failures,
    WebhookEndpoint.last_success_at,
    WebhookEndpoint.last_failure_at,
    WebhookEndpoint.created_at,
    WebhookEndpoint.updated_at,
)
_DELIVERY = (
    WebhookDelivery.id,
    WebhookDelivery.endpoint_id,
    WebhookDelivery.event_id,
    WebhookDelivery.event_type,
    WebhookDelivery.state,
    WebhookDelivery.attempts,
    WebhookDelivery.next_attempt_at,
    WebhookDelivery.last_status,
    WebhookDelivery.last_error,
    WebhookDelivery.created_at,
    WebhookDelivery.delivered_at,
)


def _endpoint(row: Any) -> EndpointRecord:
    return EndpointRecord(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=tuple(row.event_types or ()),
        enabled=bool(row.enabled),
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        consecutive_failures=row.consecutive_failures,
        last_success_at=row.last_success_at,
        last_failure_at=row.last_failure_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _delivery(row: Any) -> DeliveryRecord:
    pending = row.state == DeliveryState.PENDING
    return DeliveryRecord(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if pending else None,
        last_status=row.last_status,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


def event_body(event_id: str, event_type: str, data: Mapping[str, Any], now: float) -> str:
    """The JSON document a delivery carries (Standard Webhooks' ``type``/``timestamp``/``data``)."""
    stamp = datetime.fromtimestamp(now, tz=UTC).isoformat().replace("+00:00", "Z")
    document = {"id": event_id, "type": event_type, "timestamp": stamp, "data": dict(data)}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)


class WebhookStore:
    """Endpoints per user and their deliveries; every owner-facing read takes the owner."""

    def __init__(self, engine: AsyncEngine, sealing_key: Callable[[], bytes]) -> None:
        """``sealing_key`` is asked for only when a secret is sealed or opened (a process with
        no webhooks never reads the master secret for them)."""
        self.engine = engine
        self._sealing_key = sealing_key

    @property
    def _key(self) -> bytes:
        return self._sealing_key()

    # --- endpoints --------------------------------------------------------------------------

    async def create(
        self, user_id: str, *, url: str, description: str, event_types: Sequence[str]
    ) -> tuple[EndpointRecord, str]:
        """A new enabled endpoint and its signing secret (shown this once)."""
        now = time.time()
        endpoint_id = new_id("whk")
        secret = new_secret()
        values = {
            "id": endpoint_id,
            "user_id": user_id,
            "url": url,
            "description": description,
            "event_types": list(event_types),
            "secret_sealed": seal(self._key, secret.encode(), endpoint_id),
            "enabled": True,
            "disabled_at": None,
            "disabled_reason": None,
            "consecutive_failures": 0,
            "last_success_at": None,
            "last_failure_at": None,
            "created_at": now,
            "updated_at": now,
        }
        async with write_transaction(self.engine) as conn:
            held = await conn.execute(
                select(WebhookEndpoint.id).where(WebhookEndpoint.user_id == user_id)
            )
            if len(held.all()) >= MAX_ENDPOINTS:
                raise EndpointLimitReached
            await conn.execute(insert(WebhookEndpoint).values(**values))
        return _endpoint(SimpleNamespace(**values)), secret

    async def get(self, user_id: str, endpoint_id: str) -> EndpointRecord | None:
        """The user's endpoint, or None."""
        async with read_connection(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_ENDPOINT).where(
                        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id
                    )
                )
            ).first()
        return _endpoint(row) if row else None

    async def list_endpoints(
        self, user_id: str, *, limit: int, offset: int = 0, after: str | None = None
    ) -> list[EndpointRecord]:
        """The user's endpoints, newest first (ids below ``after`` when given)."""
        query = select(*_ENDPOINT).where(WebhookEndpoint.user_id == user_id)
        query = newest_first(query, WebhookEndpoint.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            return [_endpoint(row) for row in await conn.execute(query)]

    async def update(
        self, user_id: str, endpoint_id: str, changes: Mapping[str, Any]
    ) -> EndpointRecord | None:
        """Apply ``changes`` (url, description, event_types, enabled); enabling clears the
        failure count and the disabled mark. None when the endpoint is not the user's."""
        now = time.time()
        values: dict[str, Any] = {"updated_at": now}
        for name in ("url", "description"):
            if name in changes:
                values[name] = changes[name]
        if "event_types" in changes:
            values["event_types"] = list(changes["event_types"])
        if changes.get("enabled") is True:
            values.update(
                enabled=True, disabled_at=None, disabled_reason=None, consecutive_failures=0
            )
        elif changes.get("enabled") is False:
            values.update(enabled=False, disabled_at=now, disabled_reason="disabled by the user")
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id)
                .values(**values)
            )
            if not done.rowcount:
                return None
        return await self.get(user_id, endpoint_id)

    async def delete(self, user_id: str, endpoint_id: str) -> bool:
        """Delete the endpoint and its deliveries; whether it was the user's."""
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                delete(WebhookEndpoint).where(
                    WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id
                )
            )
        return bool(done.rowcount)

    async def rotate_secret(self, user_id: str, endpoint_id: str) -> str | None:
        """A new signing secret for the endpoint (the old one stops at once), or None."""
        secret = new_secret()
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id)
                .values(
                    secret_sealed=seal(self._key, secret.encode(), endpoint_id),
                    updated_at=time.time(),
                )
            )
        return secret if done.rowcount else None

    async def revive(self, user_id: str) -> list[tuple[EndpointRecord, bool]]:
        """Re-enable the user's dead endpoints (disabled, or failing up to the disable mark)
        with their count reset; each endpoint and whether it was revived."""
        out: list[tuple[EndpointRecord, bool]] = []
        for endpoint in await self.list_endpoints(user_id, limit=MAX_ENDPOINTS):
            healthy = endpoint.enabled and endpoint.consecutive_failures == 0
            if not healthy:
                revived = await self.update(user_id, endpoint.id, {"enabled": True})
                endpoint = revived or endpoint
            out.append((endpoint, not healthy))
        return out

    # --- events and deliveries --------------------------------------------------------------

    async def emit(
        self,
        user_id: str,
        event_type: str,
        data: Mapping[str, Any],
        *,
        only: str | None = None,
        event_id: str | None = None,
    ) -> int:
        """Queue ``event_type`` for each of the user's enabled endpoints that take it (just
        endpoint ``only`` when given); how many deliveries were queued. With ``event_id``
        (at most 40 characters, e.g. derived from a job id) the event is queued once however
        often it is emitted: a retried hook does not deliver twice."""
        async with write_transaction(self.engine) as conn:
            return await queue_event(conn, user_id, event_type, data, only=only, event_id=event_id)

    async def deliveries(
        self,
        user_id: str,
        endpoint_id: str,
        *,
        limit: int,
        offset: int = 0,
        after: str | None = None,
    ) -> list[DeliveryRecord]:
        """The endpoint's deliveries, newest first (the caller checked the endpoint is the
        user's; the owner is in the query too)."""
        query = select(*_DELIVERY).where(
            WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.user_id == user_id
        )
        query = newest_first(query, WebhookDelivery.id, after=after, offset=offset, limit=limit)
        async with read_connection(self.engine) as conn:
            return [_delivery(row) for row in await conn.execute(query)]

    async def claim_due(
        self, worker_id: str, now: float, *, lease_seconds: float, limit: int
    ) -> list[DueDelivery]:
        """Claim up to ``limit`` deliveries due now on enabled endpoints (pending, or left
        delivering by a dead dispatcher), leased to ``worker_id`` for ``lease_seconds``."""
        due = or_(
            and_(
                WebhookDelivery.state == DeliveryState.PENDING.value,
                WebhookDelivery.next_attempt_at <= now,
            ),
            and_(
                WebhookDelivery.state == DeliveryState.DELIVERING.value,
                WebhookDelivery.lease_expires < now,
            ),
        )
        async with read_connection(self.engine) as conn:
            candidates = (
                await conn.execute(
                    select(WebhookDelivery.id)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .where(due, WebhookEndpoint.enabled.is_(True))
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(limit)
                )
            ).all()
        claimed: list[DueDelivery] = []
        for (delivery_id,) in candidates:
            async with write_transaction(self.engine) as conn:
                done = await conn.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, due)
                    .values(
                        state=DeliveryState.DELIVERING.value,
                        lease_owner=worker_id,
                        lease_expires=now + lease_seconds,
                    )
                )
                if done.rowcount != 1:
                    continue  # another dispatcher took it
                row = (
                    await conn.execute(
                        select(
                            WebhookDelivery.id,
                            WebhookDelivery.endpoint_id,
                            WebhookDelivery.body,
                            WebhookDelivery.attempts,
                            WebhookEndpoint.url,
                            WebhookEndpoint.secret_sealed,
                        )
                        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                        .where(WebhookDelivery.id == delivery_id)
                    )
                ).one()
            claimed.append(
                DueDelivery(
                    id=row.id,
                    endpoint_id=row.endpoint_id,
                    url=row.url,
                    secret=open_sealed(self._key, row.secret_sealed, row.endpoint_id).decode(),
                    body=row.body.encode(),
                    attempts=row.attempts,
                )
            )
        return claimed

    async def record_attempt(
        self,
        delivery: DueDelivery,
        worker_id: str,
        now: float,
        *,
        status: int | None,
        error: str | None,
    ) -> DeliveryState | None:
        """Book one attempt's outcome (only while ``worker_id`` still holds the lease) and the
        endpoint's health; the delivery's new state, or None when the lease was lost."""
        attempts = delivery.attempts + 1
        state, next_at = after_attempt(attempts, is_success(status), now)
        async with write_transaction(self.engine) as conn:
            done = await conn.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.id,
                    WebhookDelivery.state == DeliveryState.DELIVERING.value,
                    WebhookDelivery.lease_owner == worker_id,
                )
                .values(
                    state=state.value,
                    attempts=attempts,
                    next_attempt_at=next_at if next_at is not None else now,
                    lease_owner=None,
                    lease_expires=None,
                    last_status=status,
                    last_error=error,
                    delivered_at=now if state is DeliveryState.DELIVERED else None,
                )
            )
            if done.rowcount != 1:
                return None
            # One atomic UPDATE per outcome (concurrent attempts on one endpoint must not lose
            # counts); the pure rule then decides on the count the database returned.
            failures = {
                DeliveryState.DELIVERED: literal(0),
                DeliveryState.FAILED: WebhookEndpoint.consecutive_failures + 1,
            }.get(state, WebhookEndpoint.consecutive_failures)
            health: dict[str, Any] = {"consecutive_failures": failures}
            if state is DeliveryState.DELIVERED:
                health["last_success_at"] = now
            else:
                health["last_failure_at"] = now
            count = (
                await conn.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == delivery.endpoint_id)
                    .values(**health)
                    .returning(WebhookEndpoint.consecutive_failures)
                )
            ).scalar_one_or_none()
            if count is None:
                return state
            disable = state is DeliveryState.FAILED and endpoint_after(count - 1, state)[1]
            if disable:
                await conn.execute(
                    update(WebhookEndpoint)
                    .where(
                        WebhookEndpoint.id == delivery.endpoint_id,
                        WebhookEndpoint.enabled.is_(True),
                    )
                    .values(
                        enabled=False,
                        disabled_at=now,
                        disabled_reason=f"{count} deliveries in a row failed every attempt",
                    )
                )
        return state
        return state


async def queue_event(
    conn: AsyncConnection,
    user_id: str,
    event_type: str,
    data: Mapping[str, Any],
    *,
    only: str | None = None,
    event_id: str | None = None,
    now: float | None = None,
) -> int:
    """Queue ``event_type`` for the user's enabled endpoints that take it, on ``conn`` (inside
    the caller's transaction: the event is queued exactly when the caller's change commits).
    With ``event_id`` an event is queued once per endpoint however often it is raised (the
    unique (endpoint, event) key); how many deliveries were queued."""
    now = time.time() if now is None else now
    event_id = event_id or new_id("evt")
    query = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
        WebhookEndpoint.user_id == user_id, WebhookEndpoint.enabled.is_(True)
    )
    if only is not None:
        query = query.where(WebhookEndpoint.id == only)
    takers = [
        row.id
        for row in await conn.execute(query)
        if not row.event_types or event_type in row.event_types
    ]
    if not takers:
        return 0
    seen = await conn.execute(
        select(WebhookDelivery.endpoint_id).where(
            WebhookDelivery.user_id == user_id, WebhookDelivery.event_id == event_id
        )
    )
    queued = {row.endpoint_id for row in seen}
    takers = [endpoint for endpoint in takers if endpoint not in queued]
    if not takers:
        return 0
    body = event_body(event_id, event_type, data, now)
    rows = [
        {
            "id": new_id("msg"),
            "endpoint_id": endpoint,
            "user_id": user_id,
            "event_id": event_id,
            "event_type": event_type,
            "body": body,
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_owner": None,
            "lease_expires": None,
            "last_status": None,
            "last_error": None,
            "created_at": now,
            "delivered_at": None,
        }
        for endpoint in takers
    ]
    # a race with another process emitting the same event: the unique key wins
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        dialect_insert(WebhookDelivery).on_conflict_do_nothing(
            index_elements=["endpoint_id", "event_id"]
        ),
        rows,
    )
    return len(rows)
