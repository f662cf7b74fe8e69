"""The datasets group through real HTTP on SQLite and PostgreSQL: list (search, pipeline type,
archived; offset and cursor), metadata, rows, rename, archive and restore, downloads read back
as the same rows (CSV, JSON, XLSX through python-calamine), ownership and every refusal."""

from __future__ import annotations

import csv
import io
from typing import Any

from keyed_helpers import Keyed
from python_calamine import CalamineWorkbook
from tests_server_helpers import assert_envelope

from server.datasets.store import DatasetStore, NewRow

Headers = dict[str, str]
V1 = "/api/v1/datasets"
INVALID = "invalid_request_error"


async def _user_id(keyed: Keyed, headers: Headers) -> str:
    user_id: str = (await keyed.client.get("/api/v1/auth/me", headers=headers)).json()["user_id"]
    return user_id


async def _dataset(
    keyed: Keyed,
    headers: Headers,
    name: str = "Leads",
    *,
    rows: list[dict[str, str]] | None = None,
    pipeline: str = "enrichment",
    columns: tuple[str, ...] = ("Email", "Name", "Company"),
) -> str:
    store = DatasetStore(keyed.services.db.engine)
    made = await store.create(
        await _user_id(keyed, headers),
        name=name,
        source_type="upload_csv",
        pipeline_type=pipeline,
        columns=columns,
        mapping={"email": "Email"},
    )
    await store.append(made.id, [NewRow(i + 2, row) for i, row in enumerate(rows or [])])
    return made.id


ROWS = [
    {"Email": "ann@acme.test", "Name": "Ann Lee", "Company": "Acme, Inc."},
    {"Email": "bo@acme.test", "Name": 'Bö "Quote" Jansen', "Company": "Multi\nline"},
    {"Email": "", "Name": "No Mail", "Company": ""},
]


async def test_list_search_filters_and_paginations(keyed: Keyed) -> None:
    _, session = await keyed.user()
    key = await keyed.key(session, ["datasets:read"])
    made = [await _dataset(keyed, session, f"List {i}") for i in range(5)]
    campaign = await _dataset(keyed, session, "Spring campaign", pipeline="campaign")
    listed = await keyed.client.get(f"{V1}/list", headers=key)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [d["id"] for d in body["data"]] == [campaign, *reversed(made)]
    assert (body["has_more"], body["next_cursor"], body["limit"], body["offset"]) == (
        False,
        None,
        20,
        0,
    )
    assert body["data"][0]["dataset_name"] == "Spring campaign"
    assert body["data"][0]["object"] == "dataset"
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await keyed.client.get(f"{V1}/list", params=query, headers=key)).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == [campaign, *reversed(made)]
    offset = await keyed.client.get(f"{V1}/list", params={"offset": 4, "limit": 1}, headers=key)
    assert [d["id"] for d in offset.json()["data"]] == [made[1]]
    assert offset.json()["has_more"] is True
    found = await keyed.client.get(f"{V1}/list", params={"search": " CAMPAIGN "}, headers=key)
    assert [d["id"] for d in found.json()["data"]] == [campaign]
    by_type = await keyed.client.get(
        f"{V1}/list", params={"pipeline_type": "enrichment"}, headers=key
    )
    assert [d["id"] for d in by_type.json()["data"]] == list(reversed(made))


async def test_archive_restore_and_the_archived_filters(keyed: Keyed) -> None:
    _, session = await keyed.user()
    keep, gone = await _dataset(keyed, session, "Keep"), await _dataset(keyed, session, "Gone")
    archived = await keyed.client.post(f"{V1}/{gone}/archive", headers=session)
    assert archived.status_code == 200, archived.text
    assert archived.json()["archived"] is True
    stamp = archived.json()["archived_at"]
    again = await keyed.client.post(f"{V1}/{gone}/archive", headers=session)
    assert again.json()["archived_at"] == stamp  # idempotent

    async def ids(**params: str) -> list[str]:
        page = await keyed.client.get(f"{V1}/list", params=params, headers=session)
        assert page.status_code == 200, page.text
        return [d["id"] for d in page.json()["data"]]

    assert await ids() == [keep]
    assert await ids(archived="false") == [keep]
    assert await ids(archived="true") == [gone]
    assert await ids(include_archived="true") == [gone, keep]
    assert await ids(include_archived="false") == [keep]
    assert await ids(include_archived="true", archived="1") == [gone]  # archived wins
    assert (await keyed.client.get(f"{V1}/{gone}", headers=session)).json()["archived"] is True
    restored = await keyed.client.post(f"{V1}/{gone}/restore", headers=session)
    assert restored.status_code == 200
    assert (restored.json()["archived"], restored.json()["archived_at"]) == (False, None)
    assert (await keyed.client.post(f"{V1}/{gone}/restore", headers=session)).status_code == 200
    assert await ids() == [gone, keep]


async def test_get_rows_and_rename(keyed: Keyed) -> None:
    _, session = await keyed.user()
    made = await _dataset(keyed, session, rows=ROWS * 4)
    meta = (await keyed.client.get(f"{V1}/{made}", headers=session)).json()
    assert (meta["row_count"], meta["columns"], meta["added_columns"]) == (
        12,
        ["Email", "Name", "Company"],
        [],
    )
    await DatasetStore(keyed.services.db.engine).annotate(made, {1: {"risk": "low"}})
    page = (
        await keyed.client.get(f"{V1}/{made}/rows", params={"limit": 5}, headers=session)
    ).json()
    assert [r["idx"] for r in page["data"]] == [0, 1, 2, 3, 4]
    assert page["data"][1] == {"idx": 1, "line": 3, "data": ROWS[1], "added": {"risk": "low"}}
    assert page["added_columns"] == ["risk"]
    assert page["has_more"] is True
    rest: list[int] = []
    cursor = page["next_cursor"]
    while cursor:
        more = await keyed.client.get(
            f"{V1}/{made}/rows", params={"limit": 5, "cursor": cursor}, headers=session
        )
        rest += [r["idx"] for r in more.json()["data"]]
        cursor = more.json()["next_cursor"]
    assert rest == list(range(5, 12))
    tail = await keyed.client.get(f"{V1}/{made}/rows", params={"offset": 10}, headers=session)
    assert [r["idx"] for r in tail.json()["data"]] == [10, 11]
    assert tail.json()["has_more"] is False

    renamed = await keyed.client.patch(
        f"{V1}/{made}", json={"dataset_name": "  Renamed  "}, headers=session
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Renamed"
    by_name = await keyed.client.patch(f"{V1}/{made}", json={"name": "Again"}, headers=session)
    assert by_name.json()["dataset_name"] == "Again"
    both = await keyed.client.patch(
        f"{V1}/{made}", json={"name": "Same", "dataset_name": "Same"}, headers=session
    )
    assert_envelope(both, 400, INVALID, "parameter_invalid")  # one of them, as documented


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


async def test_downloads_round_trip_and_are_counted(keyed: Keyed) -> None:
    _, session = await keyed.user()
    rows = [*ROWS, {"Email": "=cmd|' /C calc'!A0", "Name": "@evil", "Company": "-1"}]
    made = await _dataset(keyed, session, 'Q3 leads: Zürich/"VIP"', rows=rows)
    await DatasetStore(keyed.services.db.engine).annotate(
        made, {0: {"risk": "low", "risk_score": 10}, 1: {"risk": "high", "risk_score": 95}}
    )
    header = ["Email", "Name", "Company", "risk", "risk_score"]
    expected = [
        [r["Email"], r["Name"], r["Company"], *extra]
        for r, extra in zip(
            rows, [["low", 10], ["high", 95], [None, None], [None, None]], strict=True
        )
    ]

    as_csv = await keyed.client.get(f"{V1}/{made}/download", headers=session)
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"] == 'attachment; filename="Q3 leads Zurich VIP.csv"'
    parsed = _csv(as_csv.content)
    assert parsed[0] == header
    assert parsed[1:3] == [[str(c) if c is not None else "" for c in row] for row in expected[:2]]
    assert parsed[3] == ["", "No Mail", "", "", ""]
    assert parsed[4] == ["'=cmd|' /C calc'!A0", "'@evil", "'-1", "", ""]  # neutralised

    as_json = await keyed.client.get(
        f"{V1}/{made}/download", params={"format": "json"}, headers=session
    )
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["content-disposition"].endswith('.json"')
    document = as_json.json()
    assert document["columns"] == header
    assert [[row[h] for h in header] for row in document["data"]] == expected

    for fmt in ("excel", "xlsx"):
        as_xlsx = await keyed.client.get(
            f"{V1}/{made}/download", params={"format": fmt}, headers=session
        )
        assert as_xlsx.status_code == 200
        assert as_xlsx.headers["content-disposition"].endswith('.xlsx"')
        sheet: list[list[Any]] = (
            CalamineWorkbook.from_filelike(io.BytesIO(as_xlsx.content))
            .get_sheet_by_index(0)
            .to_python()
        )
        assert sheet[0] == header
        assert sheet[1] == ["ann@acme.test", "Ann Lee", "Acme, Inc.", "low", "10"]  # text cells
        assert sheet[2][:3] == [ROWS[1]["Email"], ROWS[1]["Name"], ROWS[1]["Company"]]
        assert sheet[4][:3] == ["'=cmd|' /C calc'!A0", "'@evil", "'-1"]

    meta = (await keyed.client.get(f"{V1}/{made}", headers=session)).json()
    assert meta["download_count"] == 4
    assert meta["last_downloaded_at"] is not None


async def test_an_added_column_never_shadows_an_original_one(keyed: Keyed) -> None:
    _, session = await keyed.user()
    made = await _dataset(
        keyed, session, rows=[{"Email": "a@b.test", "risk": "mine"}], columns=("Email", "risk")
    )
    await DatasetStore(keyed.services.db.engine).annotate(made, {0: {"risk": "low"}})
    as_csv = await keyed.client.get(f"{V1}/{made}/download", headers=session)
    assert _csv(as_csv.content) == [["Email", "risk", "risk (added)"], ["a@b.test", "mine", "low"]]


async def test_refusals(keyed: Keyed) -> None:
    _, session = await keyed.user()
    made = await _dataset(keyed, session, rows=ROWS)
    bad_lists: list[dict[str, Any]] = [
        {"limit": "0"},
        {"limit": "101"},
        {"offset": "-1"},
        {"cursor": "nope"},
        {"cursor": "x" * 300},
        {"search": "s" * 201},
        {"pipeline_type": "Bad Type"},
        {"archived": "maybe"},
        {"include_archived": "yes"},
    ]
    for params in bad_lists:
        refused = await keyed.client.get(f"{V1}/list", params=params, headers=session)
        assert refused.status_code == 400, (params, refused.text)
        assert refused.json()["error"]["type"] == INVALID
    for params in (
        {"limit": "1001"},
        {"limit": "x"},
        {"cursor": "bad"},
        {"cursor": "cjE6eA"},
        {"offset": "2", "cursor": "cjE6MQ"},
    ):
        refused = await keyed.client.get(f"{V1}/{made}/rows", params=params, headers=session)
        assert refused.status_code == 400, (params, refused.text)
    for body in (
        {},
        {"dataset_name": ""},
        {"dataset_name": "   "},
        {"dataset_name": "x" * 201},
        {"name": 5},
        {"name": "a", "dataset_name": "b"},
        {"name": "a", "extra": 1},
        {"name": None},
        [],
    ):
        refused = await keyed.client.patch(f"{V1}/{made}", json=body, headers=session)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["type"] == INVALID
    not_json = await keyed.client.patch(f"{V1}/{made}", content=b"{", headers=session)
    assert_envelope(not_json, 400, INVALID, "invalid_json")
    fmt = await keyed.client.get(f"{V1}/{made}/download", params={"format": "xls"}, headers=session)
    assert_envelope(fmt, 400, INVALID, "parameter_invalid")
    assert (await keyed.client.get(f"{V1}/{made}", headers=session)).json()["download_count"] == 0
    for missing in ("ds_01JF0000000000000000000000", "ds_nope", "key_01JF0000000000000000000000"):
        assert_envelope(
            await keyed.client.get(f"{V1}/{missing}", headers=session),
            404,
            INVALID,
            "dataset_not_found",
        )
    patched = await keyed.client.patch(f"{V1}/list", json={"name": "x"}, headers=session)
    assert_envelope(patched, 405, INVALID, "method_not_allowed")  # the list's path, not an id
    assert patched.headers["allow"] == "GET"
    reader = await keyed.key(session, ["datasets:read"])
    refused = await keyed.client.post(f"{V1}/{made}/archive", headers=reader)
    assert refused.status_code == 403
    other_group = await keyed.key(session, ["credits:read"])
    assert (await keyed.client.get(f"{V1}/list", headers=other_group)).status_code == 403


async def test_another_users_dataset_is_404_everywhere(keyed: Keyed) -> None:
    _, alice = await keyed.user(credits=10)
    _, bob = await keyed.user(credits=10)
    made = await _dataset(keyed, alice, "Alice's", rows=ROWS)
    calls = [
        ("GET", f"{V1}/{made}", None),
        ("GET", f"{V1}/{made}/rows", None),
        ("GET", f"{V1}/{made}/download", None),
        ("PATCH", f"{V1}/{made}", {"name": "Bob's now"}),
        ("POST", f"{V1}/{made}/archive", None),
        ("POST", f"{V1}/{made}/restore", None),
        ("POST", f"/api/v1/email-verification/dataset/{made}", {}),
        ("POST", f"/api/v1/email-verification/dataset/{made}/prune", {"max_risk": "low"}),
    ]
    for method, url, body in calls:
        response = await keyed.client.request(method, url, json=body, headers=bob)
        assert_envelope(response, 404, INVALID, "dataset_not_found")
    assert (await keyed.client.get(f"{V1}/list", headers=bob)).json()["data"] == []
    mine = (await keyed.client.get(f"{V1}/{made}", headers=alice)).json()
    assert (mine["name"], mine["archived"], mine["download_count"], mine["row_count"]) == (
        "Alice's",
        False,
        0,
        3,
    )
