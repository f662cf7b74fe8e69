"""Every resource belongs to its owner: walk every keyed route of the OpenAPI document with two
users; another user's id is a 404 on every route, and no list shows another user's rows.

A keyed route with a path parameter this walk cannot make a resource for fails the test, so a new
resource group must teach the walk how to create one (``FACTORIES``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings
from mail_support import install
from tests_server_helpers import assert_envelope

from server.settings import Settings

Headers = dict[str, str]
Factory = Callable[[Keyed, Headers], Awaitable[str]]


async def _api_key(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post("/api/v1/api-keys", json={"name": "alice's"}, headers=session)
    assert made.status_code == 201
    key_id: str = made.json()["id"]
    return key_id


async def _job(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/email-finder/verify", json={"email": "ann@acme.test"}, headers=session
    )
    assert made.status_code == 202, made.text
    job_id: str = made.json()["job_id"]
    return job_id


async def _lead_batch(keyed: Keyed, session: Headers) -> str:
    made = await keyed.client.post(
        "/api/v1/lead-finder/batch",
        json={"names": [{"name": "Ann Lee", "company": "Acme"}]},
        headers=session,
    )
    assert made.status_code == 202, made.text
    job_id: str = made.json()["job_id"]
    return job_id


async def _email(keyed: Keyed, session: Headers) -> str:
    install(keyed.services)  # a test sending identity for acme.test (server.mail.ports)
    made = await keyed.client.post(
        "/api/v1/bavimail/emails",
        json={"from": "ann@acme.test", "to": "bo@company.test", "subject": "s", "text": "t"},
        headers=session,
    )
    assert made.status_code == 202, made.text
    email_id: str = made.json()["id"]
    return email_id


FACTORIES: dict[str, Factory] = {
    "key_id": _api_key,
    "job_id": _job,
    "session_id": _lead_batch,
    "email_id": _email,
}
"""Path parameter -> how to create such a resource as a given user (returns its id)."""

SHARED = frozenset({"domain"})
"""Path parameters naming shared knowledge, not a user's resource: a domain's learned pattern
shares aggregate every tenant's confirmed finds (no addresses, no owners)."""

_PARAM = re.compile(r"{([a-z_]+)}")


@pytest_asyncio.fixture(loop_scope="function")
async def idle(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Keyed]:
    """The keyed app without a worker: jobs stay queued (the walk needs ids, not results)."""
    settings = keyed_settings(backend_settings, tmp_path, embedded_worker=False)
    async with keyed_app(settings) as running:
        yield running


async def test_another_users_ids_are_404_on_every_keyed_route(idle: Keyed) -> None:
    keyed = idle
    document = (await keyed.client.get("/openapi.json")).json()
    _, alice = await keyed.user(credits=500)
    _, bob = await keyed.user(credits=5)
    walked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("x-access") not in ("api_key", "jwt"):
                continue
            params = _PARAM.findall(path)
            if not params or set(params) <= SHARED:
                continue
            missing = [p for p in params if p not in FACTORIES]
            assert not missing, f"{method.upper()} {path}: teach the walk to make {missing}"
            concrete = path
            for name in params:
                concrete = concrete.replace("{" + name + "}", await FACTORIES[name](keyed, alice))
            body = {} if "requestBody" in operation else None  # ownership is checked first
            response = await keyed.client.request(method.upper(), concrete, json=body, headers=bob)
            assert response.status_code == 404, (method, path, response.text)
            assert_envelope(
                response, 404, "invalid_request_error", response.json()["error"]["code"]
            )
            walked += 1
    assert walked >= 1
    # alice's key survived bob's attempts
    keys = (await keyed.client.get("/api/v1/api-keys", headers=alice)).json()["data"]
    assert keys
    assert all(k["active"] for k in keys)


async def test_no_list_shows_another_users_rows(keyed: Keyed) -> None:
    document = (await keyed.client.get("/openapi.json")).json()
    alice_id, alice = await keyed.user(credits=7)
    _, bob = await keyed.user(credits=3)
    alice_ids = {alice_id, await _api_key(keyed, alice)}
    txn = (await keyed.client.get("/api/v1/credits/transactions", headers=alice)).json()
    alice_ids |= {t["id"] for t in txn["data"]}
    lists = 0
    for path, item in document["paths"].items():
        operation = item.get("get")
        if operation is None or operation.get("x-access") not in ("api_key", "jwt"):
            continue
        if _PARAM.search(path):
            continue
        response = await keyed.client.get(path, headers=bob)
        assert response.status_code == 200, (path, response.text)
        leaked = [i for i in alice_ids if i in response.text]
        assert not leaked, (path, leaked)
        lists += 1
    assert lists >= 5
