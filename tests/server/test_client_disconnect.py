"""A client that disconnects while its body is being read is a normal end, not a 500: no error
logged, nothing sent, nothing charged."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from disconnect_support import gone
from keyed_helpers import Keyed, keyed_settings
from lab.stubdns import StubResolver

from server.app import create_app
from server.settings import Settings


async def test_a_disconnect_mid_body_is_neither_logged_as_an_error_nor_charged(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = keyed_settings(Settings(database_url=sqlite_url), tmp_path)
    app = create_app(settings, resolver=StubResolver())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bavlio.test") as client,
    ):
        keyed = Keyed(client, app.state.services, settings)
        _, session = await keyed.user(credits=5)
        key = await keyed.key(session)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="server"):
            for path, headers in (
                ("/api/x402/v1/email/validate", {}),
                ("/api/v1/email-verification/validate", key),
                ("/api/v1/email-verification/validate", {**key, "Idempotency-Key": "cut-1"}),
            ):
                sent = await gone(
                    app, "POST", path, headers, {"email": "jane@acme.test"}, cut="body"
                )
                assert sent == []  # nobody to answer
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert errors == []
        assert [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
        balance = (await client.get("/api/v1/credits/balance", headers=session)).json()
        assert (balance["available_credits"], balance["used_credits"]) == (5, 0)
        # the idempotency key was let go: a complete retry runs and is charged once
        retry = await client.post(
            "/api/v1/email-verification/validate",
            json={"email": "jane@acme.test"},
            headers={**key, "Idempotency-Key": "cut-1"},
        )
        assert retry.status_code == 200
        assert "Idempotent-Replayed" not in retry.headers
