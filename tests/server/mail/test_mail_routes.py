"""The BaviMail sending routes on SQLite and PostgreSQL: queue, validation, sender refusal,
suppression, caps, list filters and pages, get, cancel (409 after the hand-off), idempotency."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from mail_support import CountTogether, install

from server.mail.outbox_rules import DailyCaps
from server.settings import Settings

EMAILS = "/api/v1/bavimail/emails"
BODY = {
    "from": "Ann <ann@acme.test>",
    "to": "john.smith@company.test",
    "subject": "Quick question",
    "text": "Hi John",
}


@pytest_asyncio.fixture(loop_scope="function")
async def mailer(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Keyed]:
    """The keyed app with a test sending identity for acme.test and no mail worker."""
    settings = keyed_settings(backend_settings, tmp_path, embedded_worker=False)
    async with keyed_app(settings) as running:
        install(running.services, suppressed={"gone@company.test": "hard_bounce"})
        yield running


async def test_send_queues_and_get_shows_it(mailer: Keyed) -> None:
    _, session = await mailer.user()
    made = await mailer.client.post(
        EMAILS,
        json={
            **BODY,
            "cc": ["c@company.test"],
            "bcc": "b@company.test",
            "html": "<p>Hi</p>",
            "tags": ["q4"],
            "headers": {"X-Campaign": "q4"},
            "attachments": [{"filename": "a.txt", "content": base64.b64encode(b"x").decode()}],
            "list_unsubscribe_url": "https://acme.test/u/1",
        },
        headers=session,
    )
    assert made.status_code == 202, made.text
    view = made.json()
    assert view["status"] == "queued"
    assert view["id"].startswith("email_")
    assert view["from"] == "ann@acme.test"
    assert view["to"] == ["john.smith@company.test"]
    assert view["bcc"] == ["b@company.test"]
    assert view["message_id"] == f"<{view['id'].lower()}@acme.test>"
    assert view["events"][0]["type"] == "queued"
    got = await mailer.client.get(f"{EMAILS}/{view['id']}", headers=session)
    assert got.status_code == 200
    assert got.json() == view


async def test_bad_requests_name_their_field(mailer: Keyed) -> None:
    _, session = await mailer.user()
    cases = [
        ({**BODY, "subject": "Hi\r\nBcc: x@evil.test"}, 400, "subject"),
        ({**BODY, "headers": {"Bcc": "x@evil.test"}}, 400, "headers"),
        ({**BODY, "to": "not-an-address"}, 400, "to"),
        ({**BODY, "text": None}, 400, "text"),
        ({**BODY, "from": "ann@other.test"}, 422, "from"),
        ({**BODY, "scheduled_at": "2099-01-01T00:00:00Z"}, 400, "scheduled_at"),
        ({**BODY, "unknown": 1}, 400, "unknown"),
        ({**BODY, "to": ["x@company.test"] * 51}, 400, "to"),
        ({**BODY, "list_unsubscribe_url": "https://acme.test/" + "u" * 961}, 400, "list_unsub"),
        ({**BODY, "headers": {"X-Token": "t" * 990}}, 400, "headers.X-Token"),
    ]
    for body, status, param in cases:
        answer = await mailer.client.post(EMAILS, json=body, headers=session)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()["error"]
        assert (error.get("param") or "").startswith(param), (body, error)


async def test_suppressed_recipients_are_shown_and_all_suppressed_fails(mailer: Keyed) -> None:
    _, session = await mailer.user()
    some = await mailer.client.post(
        EMAILS, json={**BODY, "to": ["gone@company.test", "ok@company.test"]}, headers=session
    )
    assert some.status_code == 202
    assert some.json()["status"] == "queued"
    assert some.json()["suppressed"] == [{"address": "gone@company.test", "reason": "hard_bounce"}]
    none = await mailer.client.post(
        EMAILS, json={**BODY, "to": "gone@company.test"}, headers=session
    )
    assert none.json()["status"] == "failed"
    assert none.json()["error"]["code"] == "all_recipients_suppressed"


async def test_daily_cap_is_a_429(mailer: Keyed) -> None:
    install(mailer.services, caps=DailyCaps(per_alias=1))
    _, session = await mailer.user()
    assert (await mailer.client.post(EMAILS, json=BODY, headers=session)).status_code == 202
    capped = await mailer.client.post(EMAILS, json=BODY, headers=session)
    assert capped.status_code == 429
    assert capped.json()["error"]["code"] == "daily_cap_reached"


async def test_concurrent_sends_at_cap_minus_one_queue_exactly_one(mailer: Keyed) -> None:
    """Four requests at cap - 1 whose counts all happen before any insert: one 202, three 429,
    and the alias has exactly its cap of messages."""
    mail = install(mailer.services, caps=DailyCaps(per_alias=2))
    _, session = await mailer.user()
    assert (await mailer.client.post(EMAILS, json=BODY, headers=session)).status_code == 202
    mail.outbox = CountTogether(mailer.services.db, 4)
    posts = [mailer.client.post(EMAILS, json=BODY, headers=session) for _ in range(4)]
    codes = sorted(r.status_code for r in await asyncio.gather(*posts))
    assert codes == [202, 429, 429, 429]
    listed = await mailer.client.get(EMAILS, headers=session)
    assert len(listed.json()["data"]) == 2


async def test_list_filters_and_pages(mailer: Keyed) -> None:
    _, session = await mailer.user()
    ids = []
    for i in range(5):
        made = await mailer.client.post(
            EMAILS, json={**BODY, "tags": ["even" if i % 2 == 0 else "odd"]}, headers=session
        )
        ids.append(made.json()["id"])
    await mailer.client.post(f"{EMAILS}/{ids[0]}/cancel", headers=session)
    page = (await mailer.client.get(EMAILS, params={"limit": 2}, headers=session)).json()
    assert [e["id"] for e in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = (
        await mailer.client.get(
            EMAILS, params={"limit": 10, "cursor": page["next_cursor"]}, headers=session
        )
    ).json()
    assert [e["id"] for e in rest["data"]] == ids[::-1][2:]
    even = (await mailer.client.get(EMAILS, params={"tag": "even"}, headers=session)).json()
    assert {e["id"] for e in even["data"]} == {ids[0], ids[2], ids[4]}
    cancelled = (
        await mailer.client.get(EMAILS, params={"status": "cancelled"}, headers=session)
    ).json()
    assert [e["id"] for e in cancelled["data"]] == [ids[0]]
    bad = await mailer.client.get(EMAILS, params={"status": "lost"}, headers=session)
    assert bad.status_code == 400
    for tag in ("_", "-", "x" * 64):  # tags in the schema's pattern are filters (none match)
        none = await mailer.client.get(EMAILS, params={"tag": tag}, headers=session)
        assert (none.status_code, none.json()["data"]) == (200, [])
    for tag in ("", "é", "a b", "x" * 65):
        refused = await mailer.client.get(EMAILS, params={"tag": tag}, headers=session)
        assert refused.status_code == 400, tag


async def test_cancel_until_the_hand_off_then_409(mailer: Keyed) -> None:
    _, session = await mailer.user()
    one = (await mailer.client.post(EMAILS, json=BODY, headers=session)).json()
    two = (await mailer.client.post(EMAILS, json=BODY, headers=session)).json()
    done = await mailer.client.post(f"{EMAILS}/{one['id']}/cancel", headers=session)
    assert done.status_code == 200
    assert done.json()["status"] == "cancelled"
    assert done.json()["error"]["code"] == "cancelled"
    again = await mailer.client.post(f"{EMAILS}/{one['id']}/cancel", headers=session)
    assert again.status_code == 409
    outbox = mailer.services.sending.outbox
    await outbox.claim("w", 1e12, 60, 10)
    assert await outbox.advance("w", 1e12, None, two["id"]) is not None  # handed off
    late = await mailer.client.post(f"{EMAILS}/{two['id']}/cancel", headers=session)
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "email_not_cancellable"
    missing = await mailer.client.post(
        f"{EMAILS}/email_0000000000000000000000000Z/cancel", headers=session
    )
    assert missing.status_code == 404


async def test_idempotency_key_sends_once(mailer: Keyed) -> None:
    _, session = await mailer.user()
    headers = {**session, "Idempotency-Key": "welcome/usr-1"}
    first = await mailer.client.post(EMAILS, json=BODY, headers=headers)
    second = await mailer.client.post(EMAILS, json=BODY, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    listed = (await mailer.client.get(EMAILS, headers=session)).json()
    assert len(listed["data"]) == 1
    other = await mailer.client.post(EMAILS, json={**BODY, "subject": "x"}, headers=headers)
    assert other.status_code == 422


async def test_without_sending_domains_nobody_may_send(
    backend_settings: Settings, tmp_path: Path
) -> None:
    settings = keyed_settings(backend_settings, tmp_path, embedded_worker=False)
    async with keyed_app(settings) as running:
        _, session = await running.user()
        refused = await running.client.post(EMAILS, json=BODY, headers=session)
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "domain_not_verified"


async def test_get_shows_the_bounces_of_the_email_only_to_its_owner(mailer: Keyed) -> None:
    from server.mail.dsn import RecipientStatus

    owner, session = await mailer.user()
    stranger, _ = await mailer.user()
    made = await mailer.client.post(EMAILS, json=BODY, headers=session)
    email_id = made.json()["id"]
    listed = await mailer.client.get(EMAILS, headers=session)
    assert listed.json()["data"][0]["bounces"] is None  # read one message to see them
    store = mailer.services.inbound.store
    hard = RecipientStatus(
        "john.smith@company.test",
        None,
        "failed",
        "5.1.1",
        "smtp; 550 5.1.1 no such user",
        None,
        "hard",
    )
    await store.add_bounces(
        owner, inbound_id=None, sent_message_id=email_id, recipients=[hard], now=1000.0
    )
    # A row another user's report left against the same id never shows here.
    await store.add_bounces(
        stranger, inbound_id=None, sent_message_id=email_id, recipients=[hard], now=1001.0
    )
    got = (await mailer.client.get(f"{EMAILS}/{email_id}", headers=session)).json()
    assert got["bounces"] == [
        {
            "recipient": "john.smith@company.test",
            "kind": "hard",
            "status": "5.1.1",
            "diagnostic": "smtp; 550 5.1.1 no such user",
            "at": 1000.0,
        }
    ]
    assert {"type": "bounced", "at": 1000.0} in got["events"]
