"""A client that leaves a campaign write halfway through its body, or before reading the answer,
leaves the campaign consistent: the write happened not at all (cut body) or once (answered to
nobody; an Idempotency-Key retry replays it), and nothing is logged as an error."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from camp_api_support import INLINE_STEP, URL, add_leads, ready
from disconnect_support import gone, status_of
from factory import StepSpec, add_draft, make_campaign
from keyed_helpers import Keyed, keyed_settings
from lab.stubdns import StubResolver
from starlette.applications import Starlette

from server.app import create_app
from server.db.tx import write_transaction
from server.settings import Settings

Running = tuple[Starlette, Keyed]


@pytest_asyncio.fixture(loop_scope="function")
async def running(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Running]:
    """The app itself (to drive it as a vanishing client) and a client of it, on SQLite and
    PostgreSQL."""
    settings = keyed_settings(backend_settings, tmp_path)
    app = create_app(settings, resolver=StubResolver())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bavlio.test") as client,
    ):
        yield app, Keyed(client, app.state.services, settings)


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def _campaigns(keyed: Keyed, headers: dict[str, str]) -> list[dict[str, Any]]:
    listed = await keyed.client.get(URL, headers=headers)
    assert listed.status_code == 200, listed.text
    data: list[dict[str, Any]] = listed.json()["data"]
    return data


async def _leads(keyed: Keyed, headers: dict[str, str], campaign_id: str) -> list[str]:
    listed = await keyed.client.get(f"{URL}{campaign_id}/leads", headers=headers)
    assert listed.status_code == 200, listed.text
    return sorted(lead["email"] for lead in listed.json()["data"])


async def _status(keyed: Keyed, headers: dict[str, str], campaign_id: str) -> str:
    got = await keyed.client.get(f"{URL}{campaign_id}", headers=headers)
    assert got.status_code == 200, got.text
    status: str = got.json()["status"]
    return status


async def test_a_write_cut_mid_body_changes_nothing_and_logs_nothing(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    app, keyed = running
    _, alice = await keyed.user()
    campaign = await ready(keyed, alice)
    cid = campaign["id"]
    leads_before = await _leads(keyed, alice, cid)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="server"):
        for path, payload, keys in (
            (URL, {"name": "Cut", "steps": [INLINE_STEP]}, (None, "cut-create")),
            (f"{URL}{cid}/leads", {"leads": [{"email": "dee@client.test"}]}, (None, "cut-add")),
            # launch and pause take no body: only a key makes them read (and fingerprint) it
            (f"{URL}{cid}/launch", {}, ("cut-launch",)),
            (f"{URL}{cid}/pause", {}, ("cut-pause",)),
        ):
            for key in keys:
                extra = {"Idempotency-Key": key} if key else {}
                sent = await gone(app, "POST", path, {**alice, **extra}, payload, cut="body")
                assert sent == [], path  # nobody to answer
    assert _problems(caplog) == []
    assert [c["id"] for c in await _campaigns(keyed, alice)] == [cid]
    assert await _leads(keyed, alice, cid) == leads_before
    assert await _status(keyed, alice, cid) == "draft"
    # each key was let go: a complete retry runs
    retry = await keyed.client.post(
        f"{URL}{cid}/launch", json={}, headers={**alice, "Idempotency-Key": "cut-launch"}
    )
    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers


async def test_a_write_answered_to_nobody_happened_once_and_a_retry_replays_it(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    app, keyed = running
    _, alice = await keyed.user()
    campaign = await ready(keyed, alice)
    cid = campaign["id"]
    listed = (await keyed.client.get(f"{URL}{cid}/leads", headers=alice)).json()["data"]
    bo = next(lead["id"] for lead in listed if lead["email"] == "bo@client.test")
    calls: list[tuple[str, str, Any, int]] = [
        ("POST", URL, {"name": "Gone", "steps": [INLINE_STEP]}, 201),
        ("POST", f"{URL}{cid}/leads", {"leads": [{"email": "dee@client.test"}]}, 201),
        ("DELETE", f"{URL}{cid}/leads/{bo}", None, 204),
        ("POST", f"{URL}{cid}/launch", {}, 200),
        ("POST", f"{URL}{cid}/pause", {}, 200),
        ("POST", f"{URL}{cid}/resume", {}, 200),
    ]
    caplog.clear()
    answers: list[list[dict[str, Any]]] = []
    with caplog.at_level(logging.DEBUG, logger="server"):
        for n, (method, path, payload, expected) in enumerate(calls):
            key = {**alice, "Idempotency-Key": f"gone-{n}"}
            sent = await gone(app, method, path, key, payload, cut="answer")
            assert status_of(sent) == expected, (path, sent)
            answers.append(sent)
    assert _problems(caplog) == []
    made = [c for c in await _campaigns(keyed, alice) if c["name"] == "Gone"]
    assert len(made) == 1
    assert await _leads(keyed, alice, cid) == ["cy@client.test", "dee@client.test"]
    assert await _status(keyed, alice, cid) == "active"
    # the same key again: the stored answer, the write not repeated
    for n, (method, path, payload, expected) in enumerate(calls):
        retry = await keyed.client.request(
            method, path, json=payload, headers={**alice, "Idempotency-Key": f"gone-{n}"}
        )
        assert retry.status_code == expected, (path, retry.text)
        assert retry.headers.get("Idempotent-Replayed") == "true", path
        body = b"".join(m.get("body", b"") for m in answers[n] if m["type"] == "http.response.body")
        assert retry.content == body
    assert len([c for c in await _campaigns(keyed, alice) if c["name"] == "Gone"]) == 1
    assert await _leads(keyed, alice, cid) == ["cy@client.test", "dee@client.test"]
    assert await _status(keyed, alice, cid) == "active"


async def test_an_approval_left_by_its_client_is_applied_once(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    app, keyed = running
    user_id, alice = await keyed.user()
    ids = await make_campaign(
        keyed.services.db,
        user_id=user_id,
        status="paused",  # no step goes out while the test looks
        requires_approval=True,
        steps=(StepSpec(), StepSpec(delay_seconds=60)),
        leads=[{"email": "bo@client.test"}],
        lead_status="waiting_approval",
    )
    async with write_transaction(keyed.services.db.engine) as conn:
        await add_draft(conn, ids.campaign_id, ids.lead_ids[0], time.time())
    approve = f"{URL}{ids.campaign_id}/leads/{ids.lead_ids[0]}/approve"
    drafts = f"{URL}{ids.campaign_id}/playground/drafts"
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="server"):
        cut = await gone(app, "POST", approve, alice, {"subject": "Hi Bo"}, cut="body")
        assert cut == []
        waiting = (await keyed.client.get(drafts, headers=alice)).json()["data"]
        assert [d["state"] for d in waiting] == ["draft"]  # not approved
        key = {**alice, "Idempotency-Key": "approve-1"}
        sent = await gone(app, "POST", approve, key, {"subject": "Hi Bo"}, cut="answer")
        assert status_of(sent) == 200
    assert _problems(caplog) == []
    every = await keyed.client.get(drafts, params={"state": "all"}, headers=alice)
    assert [(d["state"], d["subject"]) for d in every.json()["data"]] == [("approved", "Hi Bo")]
    retry = await keyed.client.post(approve, json={"subject": "Hi Bo"}, headers=key)
    assert retry.status_code == 200
    assert retry.headers.get("Idempotent-Replayed") == "true"


async def test_leads_added_to_nobody_are_not_added_twice_without_a_key(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Without an Idempotency-Key a blind retry of an add is safe: duplicates are skipped."""
    app, keyed = running
    _, alice = await keyed.user()
    campaign = await ready(keyed, alice)
    cid = campaign["id"]
    payload = {"leads": [{"email": "dee@client.test"}]}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="server"):
        sent = await gone(app, "POST", f"{URL}{cid}/leads", alice, payload, cut="answer")
    assert status_of(sent) == 201
    assert _problems(caplog) == []
    again = await add_leads(keyed, alice, cid, payload["leads"])
    assert again["added"] == 0, again
    assert (await _leads(keyed, alice, cid)).count("dee@client.test") == 1
