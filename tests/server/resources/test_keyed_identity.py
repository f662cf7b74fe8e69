"""Identity over HTTP: sessions, keys, scopes, plans, rate limits, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from keyed_helpers import JWT_SECRET, Keyed, keyed_app, keyed_settings
from tests_server_helpers import assert_envelope

from server.auth import keys
from server.settings import Settings


async def test_no_or_bad_credentials_are_401_envelopes(keyed: Keyed) -> None:
    cases = [
        ({}, "missing_credentials"),
        ({"Authorization": "Basic abc"}, "invalid_authorization"),
        ({"Authorization": "Bearer "}, "invalid_authorization"),
        ({"Authorization": "Bearer " + keys.generate_key()}, "invalid_api_key"),
        ({"X-API-Key": "bav_live_" + "a" * 38}, "invalid_api_key"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
        ({"Authorization": "Bearer " + "x" * 9000}, "invalid_token"),
    ]
    for headers, code in cases:
        response = await keyed.client.get("/api/v1/auth/me", headers=headers)
        assert_envelope(response, 401, "authentication_error", code)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_expired_and_foreign_tokens_are_refused(keyed: Keyed) -> None:
    expired = jwt.encode({"sub": "u", "exp": 1}, JWT_SECRET, "HS256")
    foreign = jwt.encode({"sub": "u", "exp": 2**40}, "f" * 40, "HS256")
    for token in (expired, foreign):
        response = await keyed.client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert_envelope(response, 401, "authentication_error", "invalid_token")
    assert (
        "expired"
        in (
            await keyed.client.get(
                "/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"}
            )
        ).json()["error"]["message"]
    )


async def test_first_session_creates_the_user_with_signup_credits_once(keyed: Keyed) -> None:
    headers = keyed.session("newcomer")
    first = await keyed.client.get("/api/v1/auth/me", headers=headers)
    assert first.status_code == 200
    body = first.json()
    assert body["plan"] == "free"
    assert body["auth_method"] == "jwt"
    assert body["email"] == "newcomer@x.test"
    assert body["api_key"] is None
    await keyed.client.get("/api/v1/auth/verify", headers=headers)
    balance = (await keyed.client.get("/api/v1/credits/balance", headers=headers)).json()
    assert balance["available_credits"] == 25
    assert balance["granted_credits"] == 25
    assert "x-request-id" in first.headers


async def test_key_lifecycle_over_http(keyed: Keyed) -> None:
    _, session = await keyed.user()
    made = await keyed.client.post(
        "/api/v1/api-keys", json={"name": "ci", "scopes": ["*"]}, headers=session
    )
    assert made.status_code == 201
    raw = made.json()["key"]
    assert keys.looks_valid(raw)
    key_headers = {"Authorization": f"Bearer {raw}"}
    me = (await keyed.client.get("/api/v1/auth/me", headers=key_headers)).json()
    assert me["auth_method"] == "api_key"
    assert me["api_key"]["id"] == made.json()["id"]
    listed = (await keyed.client.get("/api/v1/api-keys", headers=session)).json()["data"]
    assert [k["id"] for k in listed] == [made.json()["id"]]
    assert raw not in str(listed)
    assert listed[0]["last_used_at"] is not None
    # a key may not mint, list or revoke keys
    for method, path in (
        ("POST", "/api/v1/api-keys"),
        ("GET", "/api/v1/api-keys"),
        ("DELETE", f"/api/v1/api-keys/{made.json()['id']}"),
    ):
        refused = await keyed.client.request(method, path, json={}, headers=key_headers)
        assert_envelope(refused, 403, "permission_error", "session_required")
    revoked = await keyed.client.delete(f"/api/v1/api-keys/{made.json()['id']}", headers=session)
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False
    after = await keyed.client.get("/api/v1/auth/me", headers=key_headers)
    assert_envelope(after, 401, "authentication_error", "invalid_api_key")


async def test_another_users_key_is_a_404(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    made = await keyed.client.post("/api/v1/api-keys", json={}, headers=alice)
    key_id = made.json()["id"]
    for path in (f"/api/v1/api-keys/{key_id}", "/api/v1/api-keys/key_nope", "/api/v1/api-keys/%00"):
        response = await keyed.client.delete(path, headers=bob)
        assert_envelope(response, 404, "invalid_request_error", "api_key_not_found")
    still = await keyed.client.get(
        "/api/v1/auth/me", headers={"Authorization": "Bearer " + made.json()["key"]}
    )
    assert still.status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"scopes": ["credits:admin"]}, "scopes.0"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["nope:read"]}, "scopes.0"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"extra": 1}, "extra"),
        ({"scopes": "*"}, "scopes"),
    ],
)
async def test_bad_key_requests_are_400s(keyed: Keyed, body: dict[str, object], param: str) -> None:
    _, session = await keyed.user()
    response = await keyed.client.post("/api/v1/api-keys", json=body, headers=session)
    error = assert_envelope(
        response, 400, "invalid_request_error", response.json()["error"]["code"]
    )
    assert error["param"] == param


async def test_restricted_keys_follow_their_scopes(keyed: Keyed) -> None:
    _, session = await keyed.user(credits=5)
    reader = await keyed.key(session, ["credits:read"])
    assert (await keyed.client.get("/api/v1/credits/balance", headers=reader)).status_code == 200
    write = await keyed.client.post(
        "/api/v1/credits/estimate", json={"operation": "email.verify"}, headers=reader
    )
    error = assert_envelope(write, 403, "permission_error", "insufficient_scope")
    assert "credits:write" in error["message"]
    other = await keyed.client.get("/api/v1/auth/me", headers=reader)
    assert_envelope(other, 403, "permission_error", "insufficient_scope")
    writer = await keyed.key(session, ["credits:write", "account:read"])
    assert (
        await keyed.client.post(
            "/api/v1/credits/estimate", json={"operation": "email.verify"}, headers=writer
        )
    ).status_code == 200
    assert (await keyed.client.get("/api/v1/auth/me", headers=writer)).status_code == 200


async def test_rate_limit_per_key_with_headers(sqlite_url: str, tmp_path: Path) -> None:
    base = Settings(database_url=sqlite_url)
    settings = keyed_settings(
        base, tmp_path, plans={"tiny": {"rate_limit": "3/minute"}}, default_plan="tiny"
    )
    async with keyed_app(settings) as app:
        session = app.session("limited")
        seen = []
        for _ in range(4):
            response = await app.client.get("/api/v1/auth/me", headers=session)
            seen.append(response)
        assert [r.status_code for r in seen] == [200, 200, 200, 429]
        assert [r.headers["x-ratelimit-remaining"] for r in seen[:3]] == ["2", "1", "0"]
        assert seen[0].headers["x-ratelimit-limit"] == "3"
        assert seen[0].headers["ratelimit-policy"] == '"default";q=3;w=60'
        assert seen[0].headers["ratelimit"].startswith('"default";r=2;t=')
        refused = assert_envelope(seen[3], 429, "rate_limit_error", "rate_limited")
        assert "3 per 60" in refused["message"]
        assert int(seen[3].headers["retry-after"]) >= 1
        # another user has a window of its own
        assert (
            await app.client.get("/api/v1/auth/me", headers=app.session("b"))
        ).status_code == 200


async def test_rate_limit_store_down_fails_open(sqlite_url: str, tmp_path: Path) -> None:
    settings = keyed_settings(
        Settings(database_url=sqlite_url), tmp_path, redis_url="redis://127.0.0.1:1/0"
    )
    async with keyed_app(settings) as app:
        response = await app.client.get("/api/v1/auth/me", headers=app.session("u"))
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers


@pytest.mark.lab
async def test_rate_limit_is_shared_through_redis(sqlite_url: str, tmp_path: Path) -> None:
    settings = keyed_settings(
        Settings(database_url=sqlite_url),
        tmp_path,
        redis_url="redis://127.0.0.1:6379/0",
        plans={"tiny": {"rate_limit": "4/minute"}},
        default_plan="tiny",
    )
    subject = "shared-" + tmp_path.name
    async with keyed_app(settings) as one, keyed_app(settings) as two:
        headers = one.session(subject)
        codes = [
            (await app.client.get("/api/v1/auth/me", headers=headers)).status_code
            for app in (one, two, one, two, one)
        ]
    assert codes == [200, 200, 200, 200, 429]


async def test_master_secret_is_created_once_with_private_mode(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = load_default(sqlite_url, tmp_path)
    async with keyed_app(settings) as app:
        _, session = await app.user()
        key = await app.key(session)
    secret = tmp_path / "bavlio.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    async with keyed_app(settings) as again:  # a restart keeps the keys working
        assert (await again.client.get("/api/v1/auth/me", headers=key)).status_code == 200


def load_default(sqlite_url: str, tmp_path: Path) -> Settings:
    """Settings with no explicit key secret: the master secret file derives it."""
    return keyed_settings(Settings(database_url=sqlite_url), tmp_path)


async def test_key_list_pages(keyed: Keyed) -> None:
    _, session = await keyed.user()
    made = [
        (
            await keyed.client.post("/api/v1/api-keys", json={"name": f"k{i}"}, headers=session)
        ).json()["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    url = "/api/v1/api-keys?limit=2"
    while True:
        page = (await keyed.client.get(url, headers=session)).json()
        assert len(page["data"]) <= 2
        seen.extend(k["id"] for k in page["data"])
        if not page["has_more"]:
            break
        url = f"/api/v1/api-keys?limit=2&cursor={page['next_cursor']}"
    assert seen == sorted(made, reverse=True)
    skipped = (await keyed.client.get("/api/v1/api-keys?offset=3", headers=session)).json()
    assert [k["id"] for k in skipped["data"]] == seen[3:]
    bad = await keyed.client.get("/api/v1/api-keys?cursor=nope", headers=session)
    assert bad.status_code == 400
