"""Sender profiles over HTTP on SQLite and PostgreSQL: the five-profile cap and the single
default under concurrency, search, default, partial updates, bounded sender_data, named prompts,
every error path, ownership."""

from __future__ import annotations

import asyncio
from typing import Any

from keyed_helpers import Keyed
from sqlalchemy import func, select
from tests_server_helpers import assert_envelope

from server.db.models import SenderProfile

URL = "/api/v1/sender-profiles/"


async def _make(keyed: Keyed, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    made = await keyed.client.post(URL, json={"name": "Ann", **body}, headers=headers)
    assert made.status_code == 201, made.text
    result: dict[str, Any] = made.json()
    return result


async def _defaults(keyed: Keyed, user_id: str) -> int:
    async with keyed.services.db.engine.connect() as conn:
        count = await conn.execute(
            select(func.count())
            .select_from(SenderProfile)
            .where(SenderProfile.user_id == user_id, SenderProfile.is_default.is_(True))
        )
        return int(count.scalar_one())


async def test_crud_round_trip(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    data = {"full_name": "Ann Lee", "company": {"name": "Acme", "size": 12}, "tags": [1, None]}
    made = await _make(keyed, alice, name=" Ann at Acme ", sender_data=data)
    assert made["id"].startswith("spf_")
    assert (made["name"], made["sender_data"], made["is_default"]) == ("Ann at Acme", data, False)
    url = f"/api/v1/sender-profiles/{made['id']}"
    assert (await keyed.client.get(url, headers=alice)).json() == made
    renamed = await keyed.client.put(url, json={"name": "Ann L"}, headers=alice)
    assert renamed.status_code == 200
    assert renamed.json()["sender_data"] == data  # omitted fields stay
    replaced = await keyed.client.put(url, json={"sender_data": {"role": "CEO"}}, headers=alice)
    assert (replaced.json()["name"], replaced.json()["sender_data"]) == ("Ann L", {"role": "CEO"})
    assert (await keyed.client.delete(url, headers=alice)).status_code == 204
    for method in ("GET", "DELETE"):
        response = await keyed.client.request(method, url, headers=alice)
        assert_envelope(response, 404, "invalid_request_error", "sender_profile_not_found")
    put = await keyed.client.put(url, json={"name": "x"}, headers=alice)
    assert put.status_code == 404


async def test_at_most_five_and_a_clear_409(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = [await _make(keyed, alice, name=f"P{i}") for i in range(5)]
    sixth = await keyed.client.post(URL, json={"name": "P6"}, headers=alice)
    error = assert_envelope(sixth, 409, "invalid_request_error", "sender_profile_limit_reached")
    assert "5" in error["message"]
    await keyed.client.delete(f"/api/v1/sender-profiles/{made[0]['id']}", headers=alice)
    assert (await keyed.client.post(URL, json={"name": "P6"}, headers=alice)).status_code == 201
    _, bob = await keyed.user()  # the cap is per user
    assert (await keyed.client.post(URL, json={"name": "B"}, headers=bob)).status_code == 201


async def test_parallel_creates_exactly_five_succeed(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    responses = await asyncio.gather(
        *(
            keyed.client.post(URL, json={"name": f"P{i}", "is_default": True}, headers=alice)
            for i in range(12)
        )
    )
    assert sorted(r.status_code for r in responses) == [201] * 5 + [409] * 7
    listed = (await keyed.client.get(URL, headers=alice)).json()["data"]
    assert len(listed) == 5
    assert await _defaults(keyed, user_id) == 1


async def test_exactly_one_default_under_concurrent_switches(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    made = [await _make(keyed, alice, name=f"P{i}") for i in range(5)]
    default = await keyed.client.get(URL + "default/", headers=alice)
    assert default.status_code == 200
    assert default.json() is None
    for _ in range(3):
        await asyncio.gather(
            *(
                keyed.client.put(
                    f"/api/v1/sender-profiles/{p['id']}", json={"is_default": True}, headers=alice
                )
                for p in made
            )
        )
        assert await _defaults(keyed, user_id) == 1
    chosen = (await keyed.client.get(URL + "default/", headers=alice)).json()
    assert chosen["is_default"] is True
    # setting another clears the old one; unsetting leaves none
    other = next(p for p in made if p["id"] != chosen["id"])
    url = f"/api/v1/sender-profiles/{other['id']}"
    assert (
        await keyed.client.put(url, json={"is_default": True}, headers=alice)
    ).status_code == 200
    assert (await keyed.client.get(URL + "default", headers=alice)).json()["id"] == other["id"]
    old = await keyed.client.get(f"/api/v1/sender-profiles/{chosen['id']}", headers=alice)
    assert old.json()["is_default"] is False
    await keyed.client.put(url, json={"is_default": False}, headers=alice)
    assert (await keyed.client.get(URL + "default/", headers=alice)).json() is None


async def test_create_as_default_moves_the_default(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    first = await _make(keyed, alice, is_default=True)
    second = await _make(keyed, alice, name="B", is_default=True)
    assert (await keyed.client.get(URL + "default/", headers=alice)).json()["id"] == second["id"]
    got = await keyed.client.get(f"/api/v1/sender-profiles/{first['id']}", headers=alice)
    assert got.json()["is_default"] is False
    assert await _defaults(keyed, user_id) == 1


async def test_list_and_search(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = [
        await _make(keyed, alice, name=name) for name in ("Sales Team", "ÉQUIPE sales", "Founder")
    ]
    ids = [p["id"] for p in reversed(made)]
    listed = (await keyed.client.get(URL, headers=alice)).json()
    assert [p["id"] for p in listed["data"]] == ids  # newest first
    paged = (await keyed.client.get(URL, params={"limit": 1, "offset": 1}, headers=alice)).json()
    assert [p["id"] for p in paged["data"]] == ids[1:2]
    assert paged["has_more"] is True

    async def found(**params: Any) -> list[str]:
        response = await keyed.client.get(URL + "search/", params=params, headers=alice)
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["data"]]

    assert await found(query="SALES") == [made[1]["id"], made[0]["id"]]
    assert await found(query="équipe") == [made[1]["id"]]
    assert await found(query="zzz") == []
    assert await found(query="sales", limit=1) == [made[1]["id"]]
    assert await found() == ids
    too_long = await keyed.client.get(URL + "search/", params={"query": "x" * 101}, headers=alice)
    assert_envelope(too_long, 400, "invalid_request_error", "parameter_invalid")
    bad_limit = await keyed.client.get(URL, params={"limit": 0}, headers=alice)
    assert bad_limit.status_code == 400


async def test_create_and_update_errors(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(8):
        node["x"] = {}
        node = node["x"]
    bad = [
        {},
        {"name": ""},
        {"name": "  "},
        {"name": "x" * 101},
        {"name": "a", "sender_data": []},
        {"name": "a", "sender_data": "text"},
        {"name": "a", "sender_data": deep},
        {"name": "a", "sender_data": {"big": "x" * 70_000}},
        {"name": "a", "is_default": "yes"},
        {"name": "a", "other": 1},
    ]
    for body in bad:
        response = await keyed.client.post(URL, json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
    seven_deep: dict[str, Any] = {}
    node = seven_deep
    for _ in range(7):
        node["x"] = {}
        node = node["x"]
    assert (
        await keyed.client.post(URL, json={"name": "a", "sender_data": seven_deep}, headers=alice)
    ).status_code == 201
    made = await _make(keyed, alice)
    url = f"/api/v1/sender-profiles/{made['id']}"
    for body in ({"name": None}, {"sender_data": None}, {"is_default": None}, {"x": 1}, [1]):
        response = await keyed.client.put(url, json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)


async def test_named_prompts(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    profile = await _make(keyed, alice)
    base = f"/api/v1/sender-profiles/{profile['id']}/prompts"
    assert (await keyed.client.get(base, headers=alice)).json() == {"data": []}
    made = await keyed.client.post(
        base, json={"name": "cold-v2", "content": "Write short."}, headers=alice
    )
    assert made.status_code == 201
    assert made.json()["name"] == "cold-v2"
    await keyed.client.post(base, json={"name": "a.first", "content": "x"}, headers=alice)
    names = [p["name"] for p in (await keyed.client.get(base, headers=alice)).json()["data"]]
    assert names == ["a.first", "cold-v2"]
    taken = await keyed.client.post(base, json={"name": "cold-v2", "content": "y"}, headers=alice)
    assert_envelope(taken, 409, "invalid_request_error", "prompt_exists")
    one = await keyed.client.get(f"{base}/cold-v2", headers=alice)
    assert one.json()["content"] == "Write short."
    patched = await keyed.client.patch(
        f"{base}/cold-v2", json={"content": "Write shorter."}, headers=alice
    )
    assert patched.json()["content"] == "Write shorter."
    assert (await keyed.client.delete(f"{base}/cold-v2", headers=alice)).status_code == 204
    for method, body in (("GET", None), ("PATCH", {"content": "z"}), ("DELETE", None)):
        for name in ("cold-v2", "bad%20name", "-x", "x" * 65):
            response = await keyed.client.request(
                method, f"{base}/{name}", json=body, headers=alice
            )
            assert_envelope(response, 404, "invalid_request_error", "prompt_not_found")
    for body in (
        {"name": "bad name", "content": "x"},
        {"name": "-x", "content": "x"},
        {"name": "ok", "content": ""},
        {"name": "ok", "content": "   "},
        {"name": "ok", "content": "x" * 20_001},
        {"name": "ok"},
        {"content": "x"},
    ):
        response = await keyed.client.post(base, json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
    bad_patch = await keyed.client.patch(f"{base}/a.first", json={"content": ""}, headers=alice)
    assert bad_patch.status_code == 400
    for i in range(19):
        ok = await keyed.client.post(base, json={"name": f"p{i}", "content": "x"}, headers=alice)
        assert ok.status_code == 201
    full = await keyed.client.post(base, json={"name": "one-more", "content": "x"}, headers=alice)
    assert_envelope(full, 409, "invalid_request_error", "prompt_limit_reached")
    # deleting the profile deletes its prompts
    assert (
        await keyed.client.delete(f"/api/v1/sender-profiles/{profile['id']}", headers=alice)
    ).status_code == 204
    assert (await keyed.client.get(base, headers=alice)).status_code == 404


async def test_other_users_profiles_and_prompts_are_404(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    profile = await _make(keyed, alice, is_default=True)
    url = f"/api/v1/sender-profiles/{profile['id']}"
    await keyed.client.post(url + "/prompts", json={"name": "p", "content": "x"}, headers=alice)
    for method, path, body in (
        ("GET", url, None),
        ("PUT", url, {"name": "bob"}),
        ("DELETE", url, None),
        ("GET", url + "/prompts", None),
        ("POST", url + "/prompts", {"name": "q", "content": "x"}),
        ("GET", url + "/prompts/p", None),
        ("PATCH", url + "/prompts/p", {"content": "bob"}),
        ("DELETE", url + "/prompts/p", None),
    ):
        response = await keyed.client.request(method, path, json=body, headers=bob)
        assert_envelope(response, 404, "invalid_request_error", "sender_profile_not_found")
    assert (await keyed.client.get(URL, headers=bob)).json()["data"] == []
    assert (await keyed.client.get(URL + "default/", headers=bob)).json() is None
    assert (await keyed.client.get(URL + "search/", headers=bob)).json()["data"] == []
    assert (await keyed.client.get(url + "/prompts/p", headers=alice)).json()["content"] == "x"
    assert (await keyed.client.get(url, headers=alice)).json()["name"] == "Ann"


async def test_restricted_keys(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    reader = await keyed.key(alice, ["sender-profiles:read"])
    assert (await keyed.client.get(URL, headers=reader)).status_code == 200
    assert (await keyed.client.post(URL, json={"name": "x"}, headers=reader)).status_code == 403
    writer = await keyed.key(alice, ["sender-profiles:write"])
    assert (await keyed.client.post(URL, json={"name": "x"}, headers=writer)).status_code == 201


async def test_nul_characters_never_reach_postgresql_text(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await keyed.client.post(
        URL,
        json={"name": "A\u0000", "sender_data": {"k\u0000": ["v\u0000"]}},
        headers=alice,
    )
    assert made.status_code == 201, made.text
    assert made.json()["name"] == "A\ufffd"
    assert made.json()["sender_data"] == {"k\u0000": ["v\u0000"]}  # JSON keeps it escaped
    found = await keyed.client.get(URL + "search/", params={"query": "\u0000"}, headers=alice)
    assert found.status_code == 200
    template = await keyed.client.post(
        "/api/v1/templates/",
        json={"name": "\u0000x", "subject": "\u0000", "body_text": "a\u0000{{x}}"},
        headers=alice,
    )
    assert template.status_code == 201, template.text
    assert template.json()["body_text"] == "a\ufffd{{x}}"
    listed = await keyed.client.get("/api/v1/templates/", params={"q": "\u0000"}, headers=alice)
    assert listed.status_code == 200
    entry = await keyed.client.post(
        "/api/v1/suppression/", json={"domain": "a.com", "reason": "\u0000"}, headers=alice
    )
    assert entry.json()["reason"] == "\ufffd"
    assert (
        await keyed.client.post(
            "/api/v1/suppression/", json={"email": "a\u0000@x.com"}, headers=alice
        )
    ).status_code == 400
    prompt = await keyed.client.post(
        f"{URL}{made.json()['id']}/prompts", json={"name": "p", "content": "x\u0000"}, headers=alice
    )
    assert prompt.json()["content"] == "x\ufffd"
