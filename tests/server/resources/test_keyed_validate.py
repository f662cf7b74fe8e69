"""POST /api/v1/email-verification/validate: the paid route's use case, charged in credits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from keyed_helpers import Keyed, keyed_app, keyed_settings
from lab.stubdns import STUB_DOMAINS, StubResolver
from tests_server_helpers import assert_envelope

from emailintel.models import DnsFacts, RiskResult
from server.settings import Settings

URL = "/api/v1/email-verification/validate"


async def test_answers_are_charged_once_and_match_the_paid_route(keyed: Keyed) -> None:
    _, session = await keyed.user(credits=3)
    key = await keyed.key(session, ["email-verification:write"])
    answer = await keyed.client.post(URL, json={"email": "jane@acme.test"}, headers=key)
    assert answer.status_code == 200
    body = answer.json()
    assert body["mx_hosts"] == ["mx.acme.test"]
    paid = await keyed.client.post(
        "/api/x402/v1/email/validate", json={"email": "jane@acme.test"}
    )  # the same use case on the wallet channel (no payments configured here)
    assert {k: v for k, v in paid.json().items() if k != "elapsed_ms"} == {
        k: v for k, v in body.items() if k != "elapsed_ms"
    }
    invalid = await keyed.client.post(URL, json={"email": "not an address"}, headers=key)
    assert invalid.status_code == 200
    assert invalid.json()["risk_level"] == "invalid"
    balance = (await keyed.client.get("/api/v1/credits/balance", headers=session)).json()
    assert (balance["used_credits"], balance["available_credits"]) == (2, 1)
    page = (
        await keyed.client.get(
            "/api/v1/credits/transactions?operation_type=email.validate", headers=session
        )
    ).json()
    assert [t["amount"] for t in page["data"]] == [-1, -1]


async def test_no_credits_is_a_402_and_no_work(keyed: Keyed) -> None:
    _, session = await keyed.user(credits=0)
    response = await keyed.client.post(URL, json={"email": "jane@acme.test"}, headers=session)
    error = assert_envelope(response, 402, "payment_required", "insufficient_credits")
    assert "1 credits; 0 available" in error["message"]


async def test_bad_bodies_cost_nothing(keyed: Keyed) -> None:
    _, session = await keyed.user(credits=1)
    for body in ({}, {"email": 5}, {"email": "a@b.test", "x": 1}):
        response = await keyed.client.post(URL, json=body, headers=session)
        assert response.status_code == 400
    assert (await keyed.client.get("/api/v1/credits/balance", headers=session)).json()[
        "available_credits"
    ] == 1


async def test_dns_failure_is_a_503_and_not_charged(sqlite_url: str, tmp_path: Path) -> None:
    resolver = StubResolver(
        {**STUB_DOMAINS, "slow.test": DnsFacts(domain="slow.test", status="timeout")}
    )
    settings = keyed_settings(Settings(database_url=sqlite_url), tmp_path)
    async with keyed_app(settings, resolver=resolver) as app:
        _, session = await app.user(credits=1)
        response = await app.client.post(URL, json={"email": "a@slow.test"}, headers=session)
        assert_envelope(response, 503, "api_error", "dns_unavailable")
        balance = (await app.client.get("/api/v1/credits/balance", headers=session)).json()
        assert (balance["available_credits"], balance["held_credits"], balance["used_credits"]) == (
            1,
            0,
            0,
        )


async def test_idempotent_retry_is_charged_once(keyed: Keyed) -> None:
    _, session = await keyed.user(credits=5)
    headers = {**session, "Idempotency-Key": "v-1"}
    first = await keyed.client.post(URL, json={"email": "jane@acme.test"}, headers=headers)
    second = await keyed.client.post(URL, json={"email": "jane@acme.test"}, headers=headers)
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert (await keyed.client.get("/api/v1/credits/balance", headers=session)).json()[
        "used_credits"
    ] == 1


async def test_scope_and_plan(keyed: Keyed) -> None:
    _, session = await keyed.user(credits=5)
    reader = await keyed.key(session, ["email-verification:read"])
    response = await keyed.client.post(URL, json={"email": "jane@acme.test"}, headers=reader)
    assert_envelope(response, 403, "permission_error", "insufficient_scope")
    # the free plan may validate (only find and verify are paid-plan operations)
    _, free = await keyed.user(plan="free")
    assert (
        await keyed.client.post(URL, json={"email": "j@acme.test"}, headers=free)
    ).status_code == 200


class _SpendingValidator:
    """emailintel's validator on the stub DNS, counting calls; ``during`` runs inside the work
    (another call spending the balance meanwhile)."""

    def __init__(self) -> None:
        from emailintel.verify import Validator

        self.inner = Validator(resolver=StubResolver())
        self.calls = 0
        self.during: Callable[[], Awaitable[object]] | None = None

    async def validate(self, address: str) -> RiskResult:
        self.calls += 1
        if self.during is not None:
            await self.during()
        return await self.inner.validate(address)


async def test_a_short_balance_is_refused_before_any_work(
    backend_settings: Settings, tmp_path: Path
) -> None:
    validator = _SpendingValidator()
    async with keyed_app(keyed_settings(backend_settings, tmp_path), validator=validator) as app:
        _, session = await app.user(credits=1)
        key = await app.key(session)
        assert (await app.client.post(URL, json={"email": "a@acme.test"}, headers=key)).is_success
        for headers in (key, session):  # the key's pre-check rides on its lookup; a session reads
            response = await app.client.post(URL, json={"email": "a@acme.test"}, headers=headers)
            error = assert_envelope(response, 402, "payment_required", "insufficient_credits")
            assert "1 credits; 0 available" in error["message"]
        assert validator.calls == 1


async def test_a_balance_spent_during_the_work_withholds_the_result(
    backend_settings: Settings, tmp_path: Path
) -> None:
    validator = _SpendingValidator()
    async with keyed_app(keyed_settings(backend_settings, tmp_path), validator=validator) as app:
        user_id, session = await app.user(credits=2)
        key = await app.key(session)
        credits = app.services.keyed.credits
        validator.during = lambda: credits.debit(user_id, 2, operation="elsewhere")
        response = await app.client.post(URL, json={"email": "jane@acme.test"}, headers=key)
        error = assert_envelope(response, 402, "payment_required", "insufficient_credits")
        assert "1 credits; 0 available" in error["message"]
        assert "risk_level" not in response.text  # the work was done; its result is not sent
        assert validator.calls == 1
        balance = (await app.client.get("/api/v1/credits/balance", headers=session)).json()
        assert (balance["available_credits"], balance["used_credits"]) == (0, 2)
        charged = await credits.entries(user_id, limit=10, operation="email.validate")
        assert charged == []
