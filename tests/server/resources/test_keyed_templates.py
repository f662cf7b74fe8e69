"""Templates over HTTP on SQLite and PostgreSQL: CRUD, search, both paginations, preview with
missing variables and HTML escaping, every error path, ownership, restricted keys."""

from __future__ import annotations

from typing import Any

from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

from server.templates.store import MAX_TEMPLATES

URL = "/api/v1/templates/"
T = {"name": "Intro", "subject": "Hi {{first_name}}", "body_text": "Hello {{ first_name }}"}


async def _make(keyed: Keyed, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = await keyed.client.post(URL, json={**T, **fields}, headers=headers)
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def test_crud_round_trip(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await _make(
        keyed, alice, body_html="<p>Hi {{first_name|there}} {{ {{x}}</p>", name="  Intro A "
    )
    assert made["id"].startswith("tpl_")
    assert made["name"] == "Intro A"
    assert made["variables"] == ["first_name", "x"]
    assert [(i["part"], i["code"], i["offset"]) for i in made["issues"]] == [
        ("body_html", "unclosed_tag", 27)
    ]
    url = f"/api/v1/templates/{made['id']}"
    got = await keyed.client.get(url, headers=alice)
    assert got.json() == made
    patched = await keyed.client.patch(url, json={"subject": "New"}, headers=alice)
    assert patched.status_code == 200
    assert patched.json()["subject"] == "New"
    assert patched.json()["body_html"] == made["body_html"]  # omitted fields stay
    assert patched.json()["updated"] >= made["updated"]
    cleared = await keyed.client.patch(url, json={"body_html": None}, headers=alice)
    assert cleared.json()["body_html"] is None
    assert cleared.json()["subject"] == "New"
    gone = await keyed.client.delete(url, headers=alice)
    assert gone.status_code == 204
    assert gone.content == b""
    assert_envelope(
        await keyed.client.get(url, headers=alice),
        404,
        "invalid_request_error",
        "template_not_found",
    )
    assert_envelope(
        await keyed.client.delete(url, headers=alice),
        404,
        "invalid_request_error",
        "template_not_found",
    )


async def test_paths_with_and_without_the_trailing_slash(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await keyed.client.post("/api/v1/templates", json=T, headers=alice)
    assert made.status_code == 201
    listed = await keyed.client.get("/api/v1/templates", headers=alice)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()["data"]] == [made.json()["id"]]


async def _ids(keyed: Keyed, headers: dict[str, str]) -> list[str]:
    listed = await keyed.client.get(URL, params={"limit": 100}, headers=headers)
    return [t["id"] for t in listed.json()["data"]]


async def test_list_search_and_paginations(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    ids = [(await _make(keyed, alice, name=f"Campaign {n} ÉTÉ%_"))["id"] for n in range(5)]
    await _make(keyed, alice, name="other")
    ids.reverse()  # newest first
    found = await keyed.client.get(URL, params={"search": "campaign 3 été%_"}, headers=alice)
    assert [t["id"] for t in found.json()["data"]] == [ids[1]]
    assert (await keyed.client.get(URL, params={"q": "%"}, headers=alice)).json()["data"]
    none = await keyed.client.get(URL, params={"search": "zzz"}, headers=alice)
    assert none.json()["data"] == []
    # page / page_size (the seed's style)
    page2 = (
        await keyed.client.get(
            URL, params={"page": 2, "page_size": 2, "search": "campaign"}, headers=alice
        )
    ).json()
    assert [t["id"] for t in page2["data"]] == ids[2:4]
    assert page2["offset"] == 2
    assert page2["has_more"] is True
    # limit + cursor
    first = (await keyed.client.get(URL, params={"limit": 4}, headers=alice)).json()
    assert first["has_more"] is True
    rest = (
        await keyed.client.get(URL, params={"cursor": first["next_cursor"]}, headers=alice)
    ).json()
    assert len(first["data"]) + len(rest["data"]) == 6
    assert rest["has_more"] is False
    # mixed: page_size overrides limit, page adds to offset
    mixed = (
        await keyed.client.get(
            URL, params={"page": 2, "page_size": 2, "limit": 50, "offset": 1}, headers=alice
        )
    ).json()
    assert [t["id"] for t in mixed["data"]] == [(await _ids(keyed, alice))[i] for i in (3, 4)]
    assert (mixed["limit"], mixed["offset"]) == (2, 3)
    # offset
    skipped = (await keyed.client.get(URL, params={"offset": 5}, headers=alice)).json()
    assert [t["id"] for t in skipped["data"]] == [ids[-1]]


async def test_list_parameter_errors(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    for params in (
        {"page": 0},
        {"page_size": 101},
        {"page": "x"},
        {"page": 2, "cursor": "abc"},
        {"page_size": 5, "limit": 0},
        {"cursor": "not-a-cursor"},
        {"search": "x" * 201},
    ):
        response = await keyed.client.get(URL, params=params, headers=alice)
        assert response.status_code == 400, (params, response.text)


async def test_preview_renders_reports_missing_and_escapes_html(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await _make(
        keyed,
        alice,
        subject="{{Company}} x {{ first_name }}",
        body_text="Hi {{first_name}}, {{title|friend}} {{city}}",
        body_html="<p>{{first_name}} {{ {{</p>",
    )
    url = f"/api/v1/templates/{made['id']}/preview"
    row = {"First Name": "<Ann & Co>", "company": "Acme", "city": None}
    preview = await keyed.client.post(url, json={"row": row}, headers=alice)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["subject"] == "Acme x <Ann & Co>"
    assert body["body_text"] == "Hi <Ann & Co>, friend {{city}}"
    assert body["body_html"] == "<p>&lt;Ann &amp; Co&gt; {{ {{</p>"
    assert body["missing_variables"] == ["city"]
    assert body["complete"] is False
    assert [i["code"] for i in body["issues"]] == ["unclosed_tag", "unclosed_tag"]
    full = await keyed.client.post(
        url, json={"row": {**row, "city": "Oslo", "n": 3, "ok": True}}, headers=alice
    )
    assert full.json()["complete"] is True
    assert full.json()["missing_variables"] == []


async def test_preview_errors(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await _make(keyed, alice)
    url = f"/api/v1/templates/{made['id']}/preview"
    empty = await keyed.client.post(url, json={}, headers=alice)  # no row: all missing
    assert empty.status_code == 200, empty.text
    assert empty.json()["complete"] is False
    bad = [
        {"row": []},
        {"row": {"a": {"nested": 1}}},
        {"row": {"a": "x" * 10_001}},
        {"row": {"": "x"}},
        {"row": {f"k{i}": "v" for i in range(501)}},
        {"row": {}, "dataset_id": "x"},
    ]
    for body in bad:
        response = await keyed.client.post(url, json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
    not_json = await keyed.client.post(url, content=b"{", headers=alice)
    assert_envelope(not_json, 400, "invalid_request_error", "invalid_json")


async def test_create_and_update_errors(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    bad = [
        {},
        {"name": "x"},
        {"name": "   ", "body_text": "a"},
        {"name": "x" * 201, "body_text": "a"},
        {"name": "x", "body_text": "a" * 100_001},
        {"name": "x", "body_text": "a", "subject": "s" * 1001},
        {"name": "x", "body_text": "{{a}}" * 201},
        {"name": "x", "body_text": "a", "extra": 1},
        {"name": 3, "body_text": "a"},
    ]
    for body in bad:
        response = await keyed.client.post(URL, json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
    too_many = await keyed.client.post(
        URL, json={"name": "x", "body_text": "{{a}}" * 201}, headers=alice
    )
    assert_envelope(too_many, 400, "invalid_request_error", "too_many_variables")
    made = await _make(keyed, alice)
    url = f"/api/v1/templates/{made['id']}"
    for body in ({"name": None}, {"body_text": None}, {"subject": None}, {"nope": 1}, []):
        response = await keyed.client.patch(url, json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
    unchanged = await keyed.client.get(url, headers=alice)
    assert unchanged.json()["name"] == made["name"]


async def test_template_cap(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    from sqlalchemy import insert

    from server.db.models import TemplateRow
    from server.ids import new_id

    async with keyed.services.db.engine.begin() as conn:
        await conn.execute(
            insert(TemplateRow),
            [
                {
                    "id": new_id("tpl"),
                    "user_id": user_id,
                    "name": "t",
                    "name_key": "t",
                    "subject": "",
                    "body_text": "",
                    "body_html": None,
                    "created_at": 0.0,
                    "updated_at": 0.0,
                }
                for _ in range(MAX_TEMPLATES)
            ],
        )
    refused = await keyed.client.post(URL, json=T, headers=alice)
    assert_envelope(refused, 409, "invalid_request_error", "too_many_templates")


async def test_other_users_templates_are_404_and_unlisted(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    made = await _make(keyed, alice)
    url = f"/api/v1/templates/{made['id']}"
    for method, body in (("GET", None), ("PATCH", {"name": "b"}), ("DELETE", None)):
        response = await keyed.client.request(method, url, json=body, headers=bob)
        assert_envelope(response, 404, "invalid_request_error", "template_not_found")
    preview = await keyed.client.post(url + "/preview", json={"row": {}}, headers=bob)
    assert preview.status_code == 404
    assert (await keyed.client.get(URL, headers=bob)).json()["data"] == []
    for malformed in ("tpl_x", "sup_01JF0000000000000000000000", "..", "tpl_" + "Z" * 26 + "0"):
        response = await keyed.client.get(f"/api/v1/templates/{malformed}", headers=alice)
        assert response.status_code == 404, malformed
    assert (await keyed.client.get(url, headers=alice)).json()["name"] == "Intro"


async def test_restricted_keys(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    reader = await keyed.key(alice, ["templates:read"])
    other = await keyed.key(alice, ["suppression:write"])
    assert (await keyed.client.get(URL, headers=reader)).status_code == 200
    denied = await keyed.client.post(URL, json=T, headers=reader)
    assert denied.status_code == 403
    assert (await keyed.client.get(URL, headers=other)).status_code == 403
    writer = await keyed.key(alice, ["templates:write"])
    assert (await keyed.client.post(URL, json=T, headers=writer)).status_code == 201
    assert (await keyed.client.get(URL)).status_code == 401


async def test_idempotent_delete_replays_the_204(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    made = await _make(keyed, alice)
    url = f"/api/v1/templates/{made['id']}"
    headers = {**alice, "Idempotency-Key": "del-1"}
    first = await keyed.client.delete(url, headers=headers)
    again = await keyed.client.delete(url, headers=headers)
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == b""


async def test_preview_with_a_stored_dataset_row(keyed: Keyed) -> None:
    from server.datasets.store import DatasetStore, NewRow

    alice_id, alice = await keyed.user()
    _, bob = await keyed.user()
    made = await _make(
        keyed, alice, subject="Hi {{First Name}}", body_text="{{company}} / {{risk|unknown}}"
    )
    store = DatasetStore(keyed.services.db.engine)
    dataset = await store.create(
        alice_id,
        name="leads",
        source_type="api",
        pipeline_type="enrichment",
        columns=["first_name", "company"],
    )
    await store.append(
        dataset.id,
        [
            NewRow(line=2, data={"first_name": "Ann", "company": "Acme"}),
            NewRow(line=3, data={"first_name": "Bo", "company": "Beta"}),
        ],
    )
    await store.annotate(dataset.id, {1: {"risk": "low"}})
    url = f"/api/v1/templates/{made['id']}/preview"
    first = await keyed.client.post(
        url, json={"dataset_id": dataset.id, "row_index": 0}, headers=alice
    )
    assert first.status_code == 200, first.text
    assert (first.json()["subject"], first.json()["body_text"]) == ("Hi Ann", "Acme / unknown")
    second = await keyed.client.post(
        url, json={"dataset_id": dataset.id, "row_index": 1}, headers=alice
    )
    assert second.json()["body_text"] == "Beta / low"  # the columns our jobs added count too
    past = await keyed.client.post(
        url, json={"dataset_id": dataset.id, "row_index": 2}, headers=alice
    )
    assert_envelope(past, 404, "invalid_request_error", "row_not_found")
    theirs = await keyed.client.post(
        f"/api/v1/templates/{(await _make(keyed, bob))['id']}/preview",
        json={"dataset_id": dataset.id, "row_index": 0},
        headers=bob,
    )
    assert_envelope(theirs, 404, "invalid_request_error", "dataset_not_found")
    for body in (
        {"dataset_id": dataset.id},
        {"row_index": 0},
        {"row": {}, "dataset_id": dataset.id, "row_index": 0},
        {"dataset_id": "ds_nope", "row_index": 0},
        {"dataset_id": dataset.id, "row_index": -1},
    ):
        response = await keyed.client.post(url, json=body, headers=alice)
        assert response.status_code == 400, (body, response.text)
