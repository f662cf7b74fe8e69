"""Credits over HTTP and the Idempotency-Key contract, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

from server.billing.credit_rules import EntryKind
from server.http.idempotency_rules import fingerprint


async def test_balance_and_transactions(keyed: Keyed) -> None:
    user_id, session = await keyed.user(credits=10)
    credits = keyed.services.keyed.credits
    hold = await credits.reserve(user_id, 3, operation="email.find")
    await credits.capture(user_id, hold.id)
    await credits.reserve(user_id, 2, operation="email.verify")
    balance = (await keyed.client.get("/api/v1/credits/balance", headers=session)).json()
    assert balance == {
        "total_credits": 7,
        "available_credits": 5,
        "held_credits": 2,
        "used_credits": 3,
        "granted_credits": 10,
        "packages": [{"kind": "credited", "credits": 10}],
    }
    page = (await keyed.client.get("/api/v1/credits/transactions", headers=session)).json()
    assert [(t["kind"], t["amount"], t["balance_after"]) for t in page["data"]] == [
        ("debit", -3, 7),
        ("grant", 10, 10),
    ]
    assert page["has_more"] is False
    assert page["next_cursor"] is None
    only = (
        await keyed.client.get(
            "/api/v1/credits/transactions?operation_type=email.find", headers=session
        )
    ).json()
    assert [t["operation_type"] for t in only["data"]] == ["email.find"]


async def test_transactions_paginate_with_cursor_and_offset(keyed: Keyed) -> None:
    user_id, session = await keyed.user()
    for i in range(5):
        await keyed.services.keyed.credits.add(
            user_id, i + 1, kind=EntryKind.GRANT, reference=f"r{i}", operation="grant"
        )
    seen: list[str] = []
    url = "/api/v1/credits/transactions?limit=2"
    while True:
        page = (await keyed.client.get(url, headers=session)).json()
        seen.extend(t["id"] for t in page["data"])
        if not page["has_more"]:
            break
        url = f"/api/v1/credits/transactions?limit=2&cursor={page['next_cursor']}"
    assert len(seen) == len(set(seen)) == 5
    by_offset = (
        await keyed.client.get("/api/v1/credits/transactions?limit=2&offset=4", headers=session)
    ).json()
    assert [t["id"] for t in by_offset["data"]] == seen[4:]
    for bad in ("limit=0", "limit=500", "offset=-1", "cursor=zzz", "operation_type=DROP%20TABLE"):
        response = await keyed.client.get(f"/api/v1/credits/transactions?{bad}", headers=session)
        assert response.status_code == 400, bad


async def test_transactions_are_per_user(keyed: Keyed) -> None:
    _, alice = await keyed.user(credits=7)
    _, bob = await keyed.user()
    alice_page = (await keyed.client.get("/api/v1/credits/transactions", headers=alice)).json()
    cursor_of_alice = alice_page["data"][0]["id"]
    bob_page = (await keyed.client.get("/api/v1/credits/transactions", headers=bob)).json()
    assert bob_page["data"] == []
    assert cursor_of_alice not in str(bob_page)


@pytest.mark.parametrize(
    ("count", "discount", "total"),
    [(1, 0, 3), (99, 0, 297), (100, 5, 285), (1000, 10, 2700), (10_000, 20, 24000)],
)
async def test_estimate_applies_the_volume_tiers(
    keyed: Keyed, count: int, discount: int, total: int
) -> None:
    _, session = await keyed.user(credits=300)
    body = (
        await keyed.client.post(
            "/api/v1/credits/estimate",
            json={"operation": "email.find", "count": count},
            headers=session,
        )
    ).json()
    assert (body["discount_percent"], body["total"]) == (discount, total)
    assert body["sufficient"] is (total <= 300)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"operation": "email.nope"}, "parameter_invalid"),
        ({"operation": "email.find", "count": 0}, "parameter_invalid"),
        ({"operation": "email.find", "count": 10**7}, "parameter_invalid"),
        ({"operation": "email.find", "count": "3"}, "parameter_invalid"),
        ({"count": 3}, "parameter_missing"),
    ],
)
async def test_bad_estimates(keyed: Keyed, body: dict[str, object], code: str) -> None:
    _, session = await keyed.user()
    response = await keyed.client.post("/api/v1/credits/estimate", json=body, headers=session)
    assert_envelope(response, 400, "invalid_request_error", code)


async def test_idempotency_replays_and_refuses_another_body(keyed: Keyed) -> None:
    _, session = await keyed.user()
    headers = {**session, "Idempotency-Key": "create-1"}
    first = await keyed.client.post("/api/v1/api-keys", json={"name": "a"}, headers=headers)
    again = await keyed.client.post("/api/v1/api-keys", json={"name": "a"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    listed = (await keyed.client.get("/api/v1/api-keys", headers=session)).json()["data"]
    assert len(listed) == 1  # the retry created nothing
    other = await keyed.client.post("/api/v1/api-keys", json={"name": "b"}, headers=headers)
    assert_envelope(other, 422, "invalid_request_error", "idempotency_key_reused")
    # keys are per user: another user may use the same key
    _, bob = await keyed.user()
    mine = await keyed.client.post(
        "/api/v1/api-keys", json={"name": "a"}, headers={**bob, "Idempotency-Key": "create-1"}
    )
    assert mine.status_code == 201
    assert mine.json()["id"] != first.json()["id"]


async def test_idempotent_errors_replay_too_and_bad_keys_are_400(keyed: Keyed) -> None:
    _, session = await keyed.user()
    headers = {**session, "Idempotency-Key": "e-1"}
    bad = {"operation": "email.nope", "count": 1}
    one = await keyed.client.post("/api/v1/credits/estimate", json=bad, headers=headers)
    two = await keyed.client.post("/api/v1/credits/estimate", json=bad, headers=headers)
    assert one.status_code == two.status_code == 400
    assert two.headers["idempotent-replayed"] == "true"
    for key in ("has space", "x" * 256, "é".encode()):
        response = await keyed.client.post(
            "/api/v1/credits/estimate",
            json={"operation": "email.find"},
            headers={**session, "Idempotency-Key": key},
        )
        assert_envelope(response, 400, "invalid_request_error", "idempotency_key_invalid")


async def test_in_flight_key_is_a_409(keyed: Keyed) -> None:
    user_id, session = await keyed.user()
    body = b'{"operation":"email.find"}'
    fp = fingerprint("POST", "/api/v1/credits/estimate", body)
    await keyed.services.keyed.idempotency.claim(user_id, "busy", fp)
    response = await keyed.client.post(
        "/api/v1/credits/estimate",
        content=body,
        headers={**session, "Idempotency-Key": "busy", "Content-Type": "application/json"},
    )
    assert_envelope(response, 409, "invalid_request_error", "idempotency_in_progress")


async def test_concurrent_retries_create_one_key(keyed: Keyed) -> None:
    _, session = await keyed.user()
    headers = {**session, "Idempotency-Key": "race"}
    responses = await asyncio.gather(
        *(
            keyed.client.post("/api/v1/api-keys", json={"name": "r"}, headers=headers)
            for _ in range(8)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {201, 409}
    assert 201 in codes
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    listed = (await keyed.client.get("/api/v1/api-keys", headers=session)).json()["data"]
    assert len(listed) == 1
