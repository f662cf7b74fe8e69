"""Buying credits where no gate takes payments, and the price key's place in the keyed API
(SQLite and PostgreSQL); the paid flow itself is tests/server/test_paid_purchase_e2e.py."""

from __future__ import annotations

from pathlib import Path

from keyed_helpers import Keyed, keyed_app, keyed_settings
from tests_server_helpers import assert_envelope

from server.settings import Settings

PURCHASE = "/api/v1/credits/purchase"


async def test_without_a_gate_credits_are_never_sold(keyed: Keyed) -> None:
    _, session = await keyed.user(plan="free")
    for headers in ({}, session):
        missing = await keyed.client.post(PURCHASE, json={}, headers=headers)
        assert_envelope(missing, 404, "invalid_request_error", "route_not_found")
        # The paid mount serves its routes unpaid here, but never the purchase handler.
        around = await keyed.client.post("/api/x402/v1" + PURCHASE, json={}, headers=headers)
        assert_envelope(around, 404, "invalid_request_error", "route_not_found")
    document = (await keyed.client.get("/openapi.json")).json()
    assert PURCHASE not in document["paths"]


async def test_a_purchase_is_not_an_estimate(keyed: Keyed) -> None:
    _, session = await keyed.user()
    response = await keyed.client.post(
        "/api/v1/credits/estimate", json={"operation": "credits.purchase"}, headers=session
    )
    assert_envelope(response, 400, "invalid_request_error", response.json()["error"]["code"])
    assert response.json()["error"]["param"] == "operation"


async def test_the_pack_is_priced_from_settings(backend_settings: Settings, tmp_path: Path) -> None:
    settings = keyed_settings(
        backend_settings, tmp_path, prices={"credits.purchase": {"usd": "2", "credits": 250}}
    )
    async with keyed_app(settings) as running:
        caps = (await running.client.get("/api/v1/capabilities")).json()
    assert caps["prices"]["credits.purchase"] == {"usd": "2", "credits": 250, "unit": "purchase"}
