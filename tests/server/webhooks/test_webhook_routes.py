"""The webhooks routes through HTTP on SQLite and PostgreSQL: the secret shown once, URL rules,
limits, ownership, the test event delivered and verified, secret rotation, re-register, and a
job's terminal event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings, wait_for_job
from lab.fakesmtp import Behaviour, fake_smtp
from lab.probers import lab_prober
from lab.stubdns import STUB_DOMAINS, StubResolver
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tests_server_helpers import assert_envelope
from webhook_receiver import Receiver, running_receiver

from emailintel.models import DnsFacts, MxRecord
from server.settings import Settings
from server.webhooks.store import MAX_ENDPOINTS

BASE = "/api/v1/webhooks"
DOMAINS = {
    **STUB_DOMAINS,
    "hooks.test": DnsFacts(
        domain="hooks.test",
        status="ok",
        mx=(MxRecord(preference=10, host="mx.hooks.test", addresses=("127.0.0.1",)),),
    ),
}


@pytest.fixture(scope="module")
def mx() -> Iterator[Any]:
    with fake_smtp(Behaviour(known_users=frozenset({"ann@hooks.test"}))) as fake:
        yield fake


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="function")
async def lab(backend_settings: Settings, tmp_path: Path, mx: Any) -> AsyncIterator[Keyed]:
    """The keyed app allowing loopback receivers (a lab), dispatching only when told to."""
    settings = keyed_settings(
        backend_settings,
        tmp_path,
        webhooks_dispatch=False,
        webhooks_allow_private=True,
        webhooks_allow_http=True,
    )
    async with keyed_app(
        settings, resolver=StubResolver(DOMAINS), prober=lab_prober(port=mx.port)
    ) as running:
        yield running


async def _dispatch(app: Keyed) -> int:
    dispatcher = app.services.webhook_dispatcher()
    try:
        return await dispatcher.tick()
    finally:
        await dispatcher.aclose()


async def test_lifecycle_test_event_rotation(lab: Keyed, receiver: Receiver) -> None:
    _, session = await lab.user()
    key = await lab.key(session, scopes=["webhooks:write"])
    made = await lab.client.post(
        BASE,
        json={"url": f"{receiver.url}/hook", "description": "ci", "event_types": ["webhook.test"]},
        headers=key,
    )
    assert made.status_code == 201, made.text
    created = made.json()
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert (created["enabled"], created["event_types"]) == (True, ["webhook.test"])
    hook = f"{BASE}/{created['id']}"
    listed = (await lab.client.get(BASE, headers=key)).json()
    assert [row["id"] for row in listed["data"]] == [created["id"]]
    assert "secret" not in listed["data"][0]
    assert "secret" not in (await lab.client.get(hook, headers=key)).json()

    queued = await lab.client.post(f"{hook}/test", headers=key)
    assert queued.status_code == 202
    assert queued.json()["queued"] == 1
    assert await _dispatch(lab) == 1
    [got] = receiver.received
    assert Webhook(secret).verify(got.body, got.headers)["type"] == "webhook.test"
    deliveries = (await lab.client.get(f"{hook}/deliveries", headers=key)).json()["data"]
    assert [(d["state"], d["last_status"]) for d in deliveries] == [("delivered", 204)]

    rotated = await lab.client.post(f"{hook}/rotate-secret", headers=key)
    new_secret = rotated.json()["secret"]
    assert new_secret != secret
    await lab.client.post(f"{hook}/test", headers=key)
    assert await _dispatch(lab) == 1
    latest = receiver.received[-1]
    assert Webhook(new_secret).verify(latest.body, latest.headers)["type"] == "webhook.test"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(latest.body, latest.headers)

    patched = await lab.client.patch(
        hook, json={"enabled": False, "description": "paused"}, headers=key
    )
    assert (patched.json()["enabled"], patched.json()["description"]) == (False, "paused")
    assert (await lab.client.post(f"{hook}/test", headers=key)).json()["queued"] == 0
    revived = await lab.client.post("/api/v1/bavimail/webhooks/re-register", headers=key)
    assert [(r["id"], r["status"], r["enabled"]) for r in revived.json()["data"]] == [
        (created["id"], "reactivated", True)
    ]
    again = await lab.client.post("/api/v1/bavimail/webhooks/re-register", headers=key)
    assert [r["status"] for r in again.json()["data"]] == ["already_active"]

    gone = await lab.client.delete(hook, headers=key)
    assert gone.status_code == 200
    assert_envelope(
        await lab.client.get(hook, headers=key), 404, "invalid_request_error", "webhook_not_found"
    )


async def test_job_terminal_event_is_queued_once(lab: Keyed, receiver: Receiver) -> None:
    _, session = await lab.user(credits=5)
    made = await lab.client.post(
        BASE, json={"url": receiver.url, "event_types": ["job.succeeded"]}, headers=session
    )
    hook = f"{BASE}/{made.json()['id']}"
    accepted = await lab.client.post(
        "/api/v1/email-finder/verify", json={"email": "ann@hooks.test"}, headers=session
    )
    assert accepted.status_code == 202, accepted.text
    job = await wait_for_job(lab.client, accepted.headers["location"], session)
    assert job["status"] == "succeeded"
    import asyncio

    for _ in range(200):  # the terminal hook runs just after the job is marked finished
        rows = (await lab.client.get(f"{hook}/deliveries", headers=session)).json()["data"]
        if rows:
            break
        await asyncio.sleep(0.05)
    assert [(r["event_type"], r["event_id"]) for r in rows] == [
        ("job.succeeded", f"evt_{job['id']}")
    ]
    assert await _dispatch(lab) == 1
    body = Webhook(made.json()["secret"]).verify(
        receiver.received[0].body, receiver.received[0].headers
    )
    assert body["data"]["id"] == job["id"]
    assert "result" not in body["data"]


async def test_errors_limits_and_ownership(keyed: Keyed) -> None:
    _, ann = await keyed.user()
    _, bob = await keyed.user()
    for body, code in [
        ({"url": "http://hooks.example.com/x"}, "url_scheme"),
        ({"url": "https://127.0.0.1/x"}, "destination_forbidden"),
        ({"url": "https://localhost/x"}, "destination_forbidden"),
        ({"url": "https://u:p@hooks.example.com/x"}, "url_credentials"),
    ]:
        response = await keyed.client.post(BASE, json=body, headers=ann)
        assert_envelope(response, 400, "invalid_request_error", code)
    unknown = await keyed.client.post(
        BASE, json={"url": "https://hooks.example.com/x", "event_types": ["nope"]}, headers=ann
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "event_types"
    extra = await keyed.client.post(
        BASE, json={"url": "https://hooks.example.com/x", "secret": "mine"}, headers=ann
    )
    assert extra.status_code == 400
    ids = []
    for n in range(MAX_ENDPOINTS):
        made = await keyed.client.post(
            BASE, json={"url": f"https://hooks.example.com/{n}"}, headers=ann
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    assert_envelope(
        await keyed.client.post(BASE, json={"url": "https://hooks.example.com/x"}, headers=ann),
        409,
        "invalid_request_error",
        "too_many_webhooks",
    )
    one = f"{BASE}/{ids[0]}"
    for method, path, body in [
        ("GET", one, None),
        ("PATCH", one, {"description": "mine now"}),
        ("DELETE", one, None),
        ("POST", f"{one}/test", None),
        ("POST", f"{one}/rotate-secret", None),
        ("GET", f"{one}/deliveries", None),
        ("GET", f"{BASE}/whk_nonsense", None),
    ]:
        response = await keyed.client.request(method, path, json=body, headers=bob)
        assert_envelope(response, 404, "invalid_request_error", "webhook_not_found")
    assert (await keyed.client.get(BASE, headers=bob)).json()["data"] == []
    bad_patch = await keyed.client.patch(one, json={"url": "https://10.0.0.1/"}, headers=ann)
    assert_envelope(bad_patch, 400, "invalid_request_error", "destination_forbidden")
    read_only = await keyed.key(ann, scopes=["webhooks:read"])
    assert (await keyed.client.get(BASE, headers=read_only)).status_code == 200
    denied = await keyed.client.post(
        BASE, json={"url": "https://hooks.example.com/x"}, headers=read_only
    )
    assert denied.status_code == 403
