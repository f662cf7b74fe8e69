"""A client that leaves an MCP ``tools/call`` halfway through its body, or before reading the
answer, leaves nothing half-done: a charged check is charged only when it ran (once), a
campaign is created once or not at all, and nothing is logged as an error."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from disconnect_support import gone, status_of
from keyed_helpers import Keyed, keyed_settings
from lab.fakesmtp import Behaviour, fake_smtp
from lab.stubdns import StubResolver
from starlette.applications import Starlette

from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts
from server.app import create_app
from server.billing.credit_rules import EntryKind
from server.settings import Settings

Running = tuple[Starlette, Keyed]
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}


@pytest_asyncio.fixture(loop_scope="function")
async def running(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    """The app itself (to drive it as a vanishing client) and a client of it; acme.test's MX
    (the stub resolver's 127.0.0.2) a fake one knowing jane@acme.test."""
    settings = keyed_settings(Settings(database_url=sqlite_url), tmp_path)
    known = Behaviour(known_users=frozenset({"jane@acme.test"}))
    with fake_smtp(known, host="127.0.0.2") as mx:
        prober = Prober(
            helo="probe.verifier-lab.test",
            mail_from="bounce@verifier-lab.test",
            allow_private_mx=True,
            politeness=PolitenessConfig.unlimited(),
            timeouts=Timeouts(connect=1, banner=2, command=2),
            port=mx.port,
        )
        app = create_app(settings, resolver=StubResolver(), prober=prober)
        async with _serving(app, settings) as running:
            yield running


@contextlib.asynccontextmanager
async def _serving(app: Starlette, settings: Settings) -> AsyncIterator[Running]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bavlio.test") as client,
    ):
        yield app, Keyed(client, app.state.services, settings)


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


CALLS = (
    _call("validate_email", {"email": "jane@acme.test"}),
    _call("verify_email", {"email": "jane@acme.test"}),
    _call("create_campaign", {"name": "Gone"}),
)


async def _state(keyed: Keyed, session: dict[str, str]) -> tuple[int, int, list[str]]:
    """(available, used) credits and the campaigns' names."""
    balance = (await keyed.client.get("/api/v1/credits/balance", headers=session)).json()
    listed = (await keyed.client.get("/api/v1/campaigns/", headers=session)).json()["data"]
    return balance["available_credits"], balance["used_credits"], [c["name"] for c in listed]


async def test_a_tool_call_cut_mid_body_runs_nothing_and_logs_nothing(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    app, keyed = running
    _, session = await keyed.user(credits=5)
    key = {**MCP_HEADERS, **await keyed.key(session)}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="server"):
        for call in CALLS:
            assert await gone(app, "POST", "/mcp", key, call, cut="body") == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert await _state(keyed, session) == (5, 0, [])


def _keyed(call: dict[str, Any], key: str) -> dict[str, Any]:
    """``call`` carrying an Idempotency-Key in its ``_meta``."""
    params = {**call["params"], "_meta": {"io.bavlio/idempotency-key": key}}
    return {**call, "params": params}


def _result(body: bytes) -> Any:
    """The tool result's structured content out of a JSON-RPC answer."""
    return json.loads(body)["result"]["structuredContent"]


async def test_a_tool_call_answered_to_nobody_ran_once_and_a_keyed_retry_replays_it(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    app, keyed = running
    _, session = await keyed.user(credits=5)
    key = {**MCP_HEADERS, **await keyed.key(session)}
    calls = [_keyed(call, f"mcp-gone-{n}") for n, call in enumerate(CALLS)]
    caplog.clear()
    answers: list[Any] = []
    with caplog.at_level(logging.DEBUG, logger="server"):
        for call in calls:
            sent = await gone(app, "POST", "/mcp", key, call, cut="answer")
            assert status_of(sent) == 200
            answers.append(_result(b"".join(m.get("body", b"") for m in sent[1:])))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert answers[0]["verdict"] == "valid"
    assert answers[1]["smtp"]["accepted"] is True  # the probe ran
    assert await _state(keyed, session) == (3, 2, ["Gone"])  # each charged once, made once
    for call, answer in zip(calls, answers, strict=True):
        retry = await keyed.client.post("/mcp", json=call, headers=key)
        assert retry.status_code == 200, retry.text
        assert _result(retry.content) == answer
    assert await _state(keyed, session) == (3, 2, ["Gone"])  # replayed: not again
    # without a key a retry is a new call (charged, made) as the tool's hints say
    again = await keyed.client.post("/mcp", json=CALLS[0], headers=key)
    assert _result(again.content)["verdict"] == "valid"
    assert (await _state(keyed, session))[:2] == (2, 3)


async def test_a_keyed_use_case_tool_replays_its_refusal_and_refuses_a_reused_key(
    running: Running,
) -> None:
    _, keyed = running
    user_id, session = await keyed.user(credits=0)
    key = {**MCP_HEADERS, **await keyed.key(session)}
    broke = _keyed(CALLS[1], "verify-broke")
    first = await keyed.client.post("/mcp", json=broke, headers=key)
    assert json.loads(first.content)["result"]["isError"] is True
    assert _result(first.content)["error"]["code"] == "insufficient_credits"
    await keyed.services.keyed.credits.add(
        user_id, 1, kind=EntryKind.GRANT, reference="grant-1", operation="grant"
    )
    replayed = await keyed.client.post("/mcp", json=broke, headers=key)
    assert _result(replayed.content) == _result(first.content)  # the stored refusal
    other = _keyed(_call("verify_email", {"email": "bo@acme.test"}), "verify-broke")
    reused = await keyed.client.post("/mcp", json=other, headers=key)
    assert _result(reused.content)["error"]["code"] == "idempotency_key_reused"
    assert await _state(keyed, session) == (1, 0, [])  # nothing ran, nothing charged
