"""User extractions over HTTP on SQLite and PostgreSQL: save (rejected leads reported), list
(paging, cursor, source), info, downloads flattened as CSV/Excel/JSON, rename, delete and bulk
delete (another user's ids not found, never deleted), a session made from one, processing one
into a session; ownership and error paths."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import python_calamine
from keyed_helpers import Keyed
from sqlalchemy import func, select
from tests_server_helpers import assert_envelope

from server.db.models import ProcessingSession

V1 = "/api/v1/user-extractions"
Headers = dict[str, str]
LEADS: list[dict[str, Any]] = [
    {
        "name": "row-1",
        "columnValues": {"name": "Ann Lee", "email": "ann@acme.test", "Company": "Acme"},
        "columnValues.Title": "CTO",
    },
    {"columnValues": {"name": "Bo Chan", "email": "=cmd|' /C calc'!A0", "Company": "Bee"}},
    {"meta": {"x": 1}},
    {"url": "https://example.test", "email": "cy@acme.test"},
]


async def _save(app: Keyed, headers: Headers, **extra: Any) -> dict[str, Any]:
    body = {"title": "Leads from LinkedIn", "source": "LinkedIn", "leads": LEADS, **extra}
    made = await app.client.post(f"{V1}/", json=body, headers=headers)
    assert made.status_code == 201, made.text
    saved: dict[str, Any] = made.json()
    return saved


async def test_save_list_info_download_rename(keyed: Keyed, tmp_path: Path) -> None:
    _, alice = await keyed.user(credits=5)
    saved = await _save(keyed, alice, metadata={"page": "https://x.test"})
    assert saved["rejected"] == [{"index": 2, "reason": "field 'meta' is not a scalar"}]
    ext = saved["extraction"]
    assert ext["id"].startswith("ext_")
    assert ext["lead_count"] == 3
    assert ext["metadata"] == {"page": "https://x.test"}
    assert ext["columns"] == ["name (lead)", "name", "email", "Company", "Title", "url"]
    assert list((tmp_path / "files" / "extractions").iterdir())

    info = (await keyed.client.get(f"{V1}/{ext['id']}/info", headers=alice)).json()
    assert info["preview"][0] == {
        "name (lead)": "row-1",
        "name": "Ann Lee",
        "email": "ann@acme.test",
        "Company": "Acme",
        "Title": "CTO",
    }

    as_csv = await keyed.client.get(f"{V1}/{ext['id']}/download", headers=alice)
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert 'filename="Leads from LinkedIn.csv"' in as_csv.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(as_csv.text)))
    assert table[0] == ext["columns"]
    assert table[1] == ["row-1", "Ann Lee", "ann@acme.test", "Acme", "CTO", ""]
    assert table[2][2] == "'=cmd|' /C calc'!A0"  # formula neutralised
    assert table[3] == ["", "", "cy@acme.test", "", "", "https://example.test"]

    as_json = await keyed.client.get(f"{V1}/{ext['id']}/download?format=json", headers=alice)
    document = json.loads(as_json.content)
    assert document["columns"] == table[0]
    rows = document["data"]
    assert rows[1]["email"] == "=cmd|' /C calc'!A0"
    assert rows[2] == {
        "name (lead)": "",
        "name": "",
        "email": "cy@acme.test",
        "Company": "",
        "Title": "",
        "url": "https://example.test",
    }

    as_xlsx = await keyed.client.get(f"{V1}/{ext['id']}/download?format=excel", headers=alice)
    assert as_xlsx.status_code == 200
    book = tmp_path / "out.xlsx"
    book.write_bytes(as_xlsx.content)
    sheet = python_calamine.CalamineWorkbook.from_path(str(book)).get_sheet_by_index(0)
    cells = sheet.to_python()
    assert cells[0] == ext["columns"]
    assert cells[1][:3] == ["row-1", "Ann Lee", "ann@acme.test"]

    bad = await keyed.client.get(f"{V1}/{ext['id']}/download?format=xls", headers=alice)
    assert_envelope(bad, 400, "invalid_request_error", "parameter_invalid")

    renamed = await keyed.client.patch(
        f"{V1}/{ext['id']}/rename", json={"title": "Renamed"}, headers=alice
    )
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Renamed"
    blank = await keyed.client.patch(f"{V1}/{ext['id']}/rename", json={"title": " "}, headers=alice)
    assert_envelope(blank, 400, "invalid_request_error", "parameter_invalid")

    # list: newest first, source filter, paging by offset and cursor
    second = (await _save(keyed, alice, source="PitchBook"))["extraction"]
    third = (await _save(keyed, alice))["extraction"]
    listed = (await keyed.client.get(f"{V1}/", headers=alice)).json()
    assert [e["id"] for e in listed["data"]] == [third["id"], second["id"], ext["id"]]
    assert listed["limit"] == 50
    only = (await keyed.client.get(f"{V1}/?source=PitchBook", headers=alice)).json()
    assert [e["id"] for e in only["data"]] == [second["id"]]
    page = (await keyed.client.get(f"{V1}/?limit=2", headers=alice)).json()
    assert page["has_more"] is True
    rest = (
        await keyed.client.get(f"{V1}/?limit=2&cursor={page['next_cursor']}", headers=alice)
    ).json()
    assert [e["id"] for e in rest["data"]] == [ext["id"]]
    skipped = (await keyed.client.get(f"{V1}/?offset=2", headers=alice)).json()
    assert [e["id"] for e in skipped["data"]] == [ext["id"]]
    for query in ("limit=0", "offset=x", "cursor=nope", "source=%20bad"):
        response = await keyed.client.get(f"{V1}/?{query}", headers=alice)
        assert response.status_code == 400, (query, response.text)


async def test_delete_and_bulk_delete_only_touch_own(keyed: Keyed, tmp_path: Path) -> None:
    _, alice = await keyed.user()
    _, bob = await keyed.user()
    a1 = (await _save(keyed, alice))["extraction"]["id"]
    a2 = (await _save(keyed, alice))["extraction"]["id"]
    b1 = (await _save(keyed, bob))["extraction"]["id"]
    response = await keyed.client.post(
        f"{V1}/bulk-delete", json={"ids": [a1, b1, "ext_nope", a1]}, headers=alice
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "results": [
            {"id": a1, "deleted": True, "error": None},
            {"id": b1, "deleted": False, "error": "not_found"},
            {"id": "ext_nope", "deleted": False, "error": "not_found"},
        ],
        "deleted_count": 1,
    }
    assert (await keyed.client.get(f"{V1}/{b1}/info", headers=bob)).status_code == 200
    gone = await keyed.client.get(f"{V1}/{a1}/info", headers=alice)
    assert_envelope(gone, 404, "invalid_request_error", "extraction_not_found")
    deleted = await keyed.client.delete(f"{V1}/{a2}", headers=alice)
    assert deleted.json() == {"id": a2, "object": "extraction", "deleted": True}
    again = await keyed.client.delete(f"{V1}/{a2}", headers=alice)
    assert_envelope(again, 404, "invalid_request_error", "extraction_not_found")
    files = list((tmp_path / "files" / "extractions").iterdir())
    assert [f.name for f in files] == [f"{b1}.json"]
    empty = await keyed.client.post(f"{V1}/bulk-delete", json={"ids": []}, headers=alice)
    assert_envelope(empty, 400, "invalid_request_error", "parameter_invalid")


async def test_session_from_extraction_and_process(idle: Keyed) -> None:
    _, alice = await idle.user(credits=8)
    ext = (await _save(idle, alice))["extraction"]["id"]
    made = await idle.client.post(
        f"{V1}/{ext}/create-session", json={"sender_data": {"offer": "x"}}, headers=alice
    )
    assert made.status_code == 201, made.text
    created = made.json()
    assert created["added"] == 3
    assert created["session"]["name"] == "Leads from LinkedIn"
    assert created["session"]["row_count"] == 3
    sid = created["session"]["id"]
    results = (await idle.client.get(f"/api/v1/sessions/{sid}/results", headers=alice)).json()
    assert results["data"][0]["data"]["name"] == "Ann Lee"
    info = (await idle.client.get(f"{V1}/{ext}/info", headers=alice)).json()
    assert info["session_id"] == sid

    started = await idle.client.post(
        f"{V1}/{ext}/process", json={"session_id": sid, "enrichments": ["validate"]}, headers=alice
    )
    assert started.status_code == 202, started.text
    # rows appended again (6), validate for each row with an email column value
    assert started.json()["credits_reserved"] == 6
    busy = await idle.client.post(
        f"{V1}/{ext}/process", json={"session_id": sid, "enrichments": ["validate"]}, headers=alice
    )
    assert_envelope(busy, 409, "invalid_request_error", "session_busy")
    fresh = await idle.client.post(
        f"{V1}/{ext}/process", json={"enrichments": ["validate"]}, headers=alice
    )
    assert_envelope(fresh, 402, "payment_required", "insufficient_credits")
    async with idle.services.db.engine.connect() as conn:  # the session made for it is gone
        count = (await conn.execute(select(func.count()).select_from(ProcessingSession))).scalar()
    assert count == 1
    # deleting the session unlinks the extraction and cancels the job (credits back)
    assert (await idle.client.delete(f"/api/v1/sessions/{sid}", headers=alice)).status_code == 200
    assert (await idle.client.get(f"{V1}/{ext}/info", headers=alice)).json()["session_id"] is None
    balance = (await idle.client.get("/api/v1/credits/balance", headers=alice)).json()
    assert (balance["available_credits"], balance["held_credits"]) == (8, 0)


async def test_every_extraction_route_is_404_for_another_user(keyed: Keyed) -> None:
    _, alice = await keyed.user(credits=10)
    _, bob = await keyed.user(credits=10)
    ext = (await _save(keyed, alice))["extraction"]["id"]
    bob_sid = (await keyed.client.post("/api/v1/sessions/create", json={}, headers=bob)).json()[
        "id"
    ]
    alice_sid = (await keyed.client.post("/api/v1/sessions/create", json={}, headers=alice)).json()[
        "id"
    ]
    calls: list[tuple[str, str, Any]] = [
        ("GET", f"{ext}/info", None),
        ("GET", f"{ext}/download?format=json", None),
        ("PATCH", f"{ext}/rename", {"title": "mine"}),
        ("DELETE", ext, None),
        ("POST", f"{ext}/create-session", {}),
        ("POST", f"{ext}/process", {"enrichments": ["validate"], "session_id": bob_sid}),
        ("GET", "ext_01J000000000000000000000000/info", None),
        ("GET", "nope/info", None),
    ]
    for method, path, body in calls:
        response = await keyed.client.request(method, f"{V1}/{path}", json=body, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "extraction_not_found"
    # alice's extraction into bob's... and bob's session for alice's extraction: both 404
    cross = await keyed.client.post(
        f"{V1}/{ext}/process",
        json={"enrichments": ["validate"], "session_id": bob_sid},
        headers=alice,
    )
    assert_envelope(cross, 404, "invalid_request_error", "session_not_found")
    listed = (await keyed.client.get(f"{V1}/", headers=bob)).json()
    assert listed["data"] == []
    info = (await keyed.client.get(f"{V1}/{ext}/info", headers=alice)).json()
    assert info["title"] == "Leads from LinkedIn"
    assert alice_sid


async def test_save_refusals(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"title": "t", "source": "x", "leads": []}, "parameter_invalid"),
        ({"title": "t", "source": "bad/source", "leads": [{"a": "b"}]}, "parameter_invalid"),
        ({"title": "t", "leads": [{"a": "b"}]}, "parameter_missing"),
        ({"title": "t", "source": "x", "leads": [{"a": "b"}], "more": 1}, "parameter_unknown"),
    ]
    for body, code in cases:
        response = await keyed.client.post(f"{V1}/", json=body, headers=alice)
        assert_envelope(response, 400, "invalid_request_error", code)
    huge = {"title": "t", "source": "x", "leads": [{"a": "x" * 9000}] * 200}
    response = await keyed.client.post(f"{V1}/", json=huge, headers=alice)
    assert_envelope(response, 413, "invalid_request_error", "body_too_large")
    # nothing usable: saved empty, every lead reported
    empty = await _save(keyed, alice, leads=[{}, {"a": None}])
    assert empty["extraction"]["lead_count"] == 0
    assert [r["index"] for r in empty["rejected"]] == [0, 1]
    wide = [{f"{p}{i}": "x" for i in range(200)} for p in "cde"]
    saved = await _save(keyed, alice, leads=wide)
    assert saved["rejected"] == [
        {"index": 2, "reason": "its fields would take the dataset over 500 columns"}
    ]
    assert len(saved["extraction"]["columns"]) == 400


async def test_literal_siblings_are_405_and_downloads_are_documented(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    for path in ("/api/v1/sessions/create", f"{V1}/bulk-delete"):
        response = await keyed.client.delete(path, headers=alice)
        error = assert_envelope(response, 405, "invalid_request_error", "method_not_allowed")
        assert error["message"]
        assert response.headers["allow"] == "POST"
    document = (await keyed.client.get("/openapi.json")).json()
    ok = document["paths"][f"{V1}/{{extraction_id}}/download"]["get"]["responses"]["200"]
    assert list(ok["content"]) == [
        "text/csv",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/json",
    ]
    assert "$ref" in ok["content"]["application/json"]["schema"]  # the JSON shape is documented
