"""Webhook deliveries on SQLite and PostgreSQL against a real loopback receiver: signatures that
stock Standard Webhooks code verifies, retries on the schedule, the endpoint disabled after
repeated failures and revived, leases, event filters, once-only events, and the SSRF rule
applied again at dispatch."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lab.webserver import free_port
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhook_receiver import Receiver, running_receiver

from server.auth.store import AccountStore
from server.db.engine import Database
from server.webhooks.dispatch import Dispatcher
from server.webhooks.rules import DISABLE_AFTER, MAX_ATTEMPTS, RETRY_DELAYS, DeliveryState
from server.webhooks.store import WebhookStore


class Clock:
    """A settable clock (no sleeps: the dispatcher takes its time from here)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def _setup(db: Database) -> tuple[WebhookStore, str]:
    user, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        "hooks", email=None, plan="paid"
    )
    return WebhookStore(db.engine, lambda: b"s" * 32), user.id


def _dispatcher(store: WebhookStore, clock: Clock, **options: object) -> Dispatcher:
    settings: dict[str, object] = {"allow_private": True, "allow_http": True, "clock": clock}
    settings.update(options)
    return Dispatcher(store, **settings)  # type: ignore[arg-type]


async def test_signed_delivery_verifies_with_stock_code(db: Database, receiver: Receiver) -> None:
    store, user = await _setup(db)
    endpoint, secret = await store.create(
        user, url=f"{receiver.url}/in?src=bavlio", description="", event_types=[]
    )
    assert await store.emit(user, "job.succeeded", {"id": "job_1", "n": 1}) == 1
    dispatcher = Dispatcher(store, allow_private=True, allow_http=True)
    try:
        assert await dispatcher.tick() == 1
        assert await dispatcher.tick() == 0
    finally:
        await dispatcher.aclose()
    [got] = receiver.received
    assert got.path == "/in"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["host"] == receiver.url.removeprefix("http://")
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"] == {"id": "job_1", "n": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body + b" ", got.headers)
    [delivery] = await store.deliveries(user, endpoint.id, limit=10)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 204)
    assert delivery.id == got.headers["webhook-id"]
    after = await store.get(user, endpoint.id)
    assert after is not None
    assert after.last_success_at is not None


async def test_retries_then_fails_and_disables_then_revives(
    db: Database, receiver: Receiver
) -> None:
    store, user = await _setup(db)
    receiver.statuses = [500] * 1000
    endpoint, _ = await store.create(user, url=receiver.url, description="", event_types=[])
    for n in range(DISABLE_AFTER):
        await store.emit(user, "job.failed", {"n": n})
    clock = Clock()
    dispatcher = _dispatcher(store, clock)
    try:
        assert await dispatcher.tick() == DISABLE_AFTER
        [first] = await store.deliveries(user, endpoint.id, limit=1)
        assert (first.state, first.attempts, first.last_error) == ("pending", 1, "http_500")
        assert first.next_attempt_at == clock.now + RETRY_DELAYS[0]
        clock.now += RETRY_DELAYS[0] - 1
        assert await dispatcher.tick() == 0  # not due yet
        for _ in range(MAX_ATTEMPTS - 1):
            clock.now += max(RETRY_DELAYS) + 1
            assert await dispatcher.tick() == DISABLE_AFTER
        clock.now += max(RETRY_DELAYS) + 1
        assert await dispatcher.tick() == 0
    finally:
        await dispatcher.aclose()
    assert len(receiver.received) == DISABLE_AFTER * MAX_ATTEMPTS
    states = {d.state for d in await store.deliveries(user, endpoint.id, limit=100)}
    assert states == {DeliveryState.FAILED.value}
    dead = await store.get(user, endpoint.id)
    assert dead is not None
    assert (dead.enabled, dead.consecutive_failures) == (False, DISABLE_AFTER)
    assert dead.disabled_reason is not None
    # A disabled endpoint gets nothing queued; revived, it is healthy again.
    assert await store.emit(user, "job.failed", {}) == 0
    [(revived, changed)] = await store.revive(user)
    assert changed is True
    assert (revived.enabled, revived.consecutive_failures, revived.disabled_at) == (True, 0, None)
    [(_, again)] = await store.revive(user)
    assert again is False


async def test_filters_once_only_events_and_leases(db: Database, receiver: Receiver) -> None:
    store, user = await _setup(db)
    failed_only, _ = await store.create(
        user, url=receiver.url, description="", event_types=["job.failed"]
    )
    everything, _ = await store.create(user, url=receiver.url, description="", event_types=[])
    assert await store.emit(user, "job.succeeded", {}) == 1
    assert await store.emit(user, "job.failed", {}, event_id="evt_job_x") == 2
    assert await store.emit(user, "job.failed", {}, event_id="evt_job_x") == 0
    assert len(await store.deliveries(user, failed_only.id, limit=10)) == 1
    assert len(await store.deliveries(user, everything.id, limit=10)) == 2
    # Another user's emit reaches none of these endpoints.
    other, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        "other", email=None, plan="paid"
    )
    assert await store.emit(other.id, "job.failed", {}) == 0
    assert await store.deliveries(other.id, everything.id, limit=10) == []
    # Leases: a claimed delivery is not claimed again until its lease ends.
    now = Clock().now
    claimed = await store.claim_due("a", now, lease_seconds=60, limit=10)
    assert len(claimed) == 3
    assert await store.claim_due("b", now + 30, lease_seconds=60, limit=10) == []
    retaken = await store.claim_due("b", now + 61, lease_seconds=60, limit=10)
    assert sorted(d.id for d in retaken) == sorted(d.id for d in claimed)
    lost = await store.record_attempt(claimed[0], "a", now + 62, status=204, error=None)
    assert lost is None  # "a" lost its lease: its late answer books nothing
    done = await store.record_attempt(retaken[0], "b", now + 62, status=204, error=None)
    assert done is DeliveryState.DELIVERED


async def test_dispatch_applies_the_destination_rule(db: Database, receiver: Receiver) -> None:
    store, user = await _setup(db)
    endpoint, _ = await store.create(user, url=receiver.url, description="", event_types=[])
    await store.emit(user, "job.succeeded", {})
    clock = Clock()
    strict = _dispatcher(store, clock, allow_private=False)
    try:
        assert await strict.tick() == 1
    finally:
        await strict.aclose()
    assert receiver.received == []
    [delivery] = await store.deliveries(user, endpoint.id, limit=1)
    assert (delivery.state, delivery.last_error, delivery.last_status) == (
        "pending",
        "destination_forbidden",
        None,
    )


async def test_timeouts_refused_connections_and_big_bodies(db: Database) -> None:
    store, user = await _setup(db)
    slow = Receiver(delay=3.0)
    chatty = Receiver(body_size=5_000_000)
    with running_receiver(slow), running_receiver(chatty):
        closed = f"http://127.0.0.1:{free_port()}/"
        urls = {"slow": slow.url, "closed": closed, "chatty": chatty.url}
        ids = {}
        for name, url in urls.items():
            endpoint, _ = await store.create(user, url=url, description=name, event_types=[])
            ids[name] = endpoint.id
        await store.emit(user, "job.succeeded", {"big": "x" * 1000})
        dispatcher = _dispatcher(store, Clock(), timeout=0.5)
        try:
            assert await dispatcher.tick() == 3
        finally:
            await dispatcher.aclose()
    outcome = {}
    for name, endpoint_id in ids.items():
        [delivery] = await store.deliveries(user, endpoint_id, limit=1)
        outcome[name] = (delivery.state, delivery.last_status, delivery.last_error)
    assert outcome == {
        "slow": ("pending", None, "timeout"),
        "closed": ("pending", None, "connect_error"),
        "chatty": ("delivered", 204, None),
    }
    body = json.loads(chatty.received[0].body)
    assert body["data"]["big"] == "x" * 1000
