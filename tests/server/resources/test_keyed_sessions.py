"""Processing sessions over HTTP on SQLite and PostgreSQL: create, leads (rejections reported),
sender data (merge, replace, bulk), results, status, 409 while processing, 402 without credits,
delete cascade (job cancelled, credits back, dataset and rows gone), ownership, error paths."""

from __future__ import annotations

from typing import Any

from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

from server.datasets.store import DatasetStore

Headers = dict[str, str]
V1 = "/api/v1"


async def _session(app: Keyed, headers: Headers, **body: Any) -> dict[str, Any]:
    made = await app.client.post(f"{V1}/sessions/create", json=body, headers=headers)
    assert made.status_code == 201, made.text
    session: dict[str, Any] = made.json()
    return session


async def _leads(app: Keyed, headers: Headers, sid: str, leads: list[Any]) -> dict[str, Any]:
    added = await app.client.post(
        f"{V1}/sessions/{sid}/leads", json={"leads": leads}, headers=headers
    )
    assert added.status_code == 200, added.text
    body: dict[str, Any] = added.json()
    return body


async def _balance(app: Keyed, headers: Headers) -> tuple[int, int, int]:
    b = (await app.client.get(f"{V1}/credits/balance", headers=headers)).json()
    return b["available_credits"], b["held_credits"], b["used_credits"]


async def test_lifecycle_leads_sender_data_results(keyed: Keyed) -> None:
    alice_id, alice = await keyed.user(credits=5)
    session = await _session(
        keyed, alice, name="Q1", sender_data={"company": "Us", "offer": {"price": 10}}
    )
    assert session["state"] == "created"
    assert session["dataset_id"] is None
    assert session["id"].startswith("sess_")
    sid = session["id"]
    added = await _leads(
        keyed,
        alice,
        sid,
        [
            {"email": "ann@acme.test", "name": "Ann Lee", "company": "Acme"},
            {"columnValues": {"Full Name": "Bo Chan", "email": "bo@acme.test"}, "name": "x"},
            {"nested": {"a": 1}},
            {},
            {"email": None},
        ],
    )
    assert added["added"] == 2
    assert added["rejected"] == [
        {"index": 2, "reason": "field 'nested' is not a scalar"},
        {"index": 3, "reason": "the lead has no values"},
        {"index": 4, "reason": "the lead has no values"},
    ]
    assert added["row_count"] == 2
    dataset_id = added["dataset_id"]
    again = await _leads(keyed, alice, sid, [{"email": "cy@acme.test", "Title": "CTO"}])
    assert (again["dataset_id"], again["row_count"], again["added"]) == (dataset_id, 3, 1)

    results = await keyed.client.get(f"{V1}/sessions/{sid}/results?limit=2", headers=alice)
    assert results.status_code == 200
    page = results.json()
    assert page["columns"] == ["email", "name", "company", "Full Name", "Title"]
    assert [row["idx"] for row in page["data"]] == [0, 1]
    assert page["data"][1]["data"] == {"Full Name": "Bo Chan", "email": "bo@acme.test", "name": "x"}
    assert page["has_more"] is True
    rest = (await keyed.client.get(f"{V1}/sessions/{sid}/results?offset=2", headers=alice)).json()
    assert [row["data"]["email"] for row in rest["data"]] == ["cy@acme.test"]
    assert rest["has_more"] is False

    merged = await keyed.client.post(
        f"{V1}/sessions/{sid}/sender-data",
        json={"sender_data": {"offer": None, "tone": "warm"}},
        headers=alice,
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["sender_data"] == {"company": "Us", "tone": "warm"}
    bulk = await keyed.client.post(
        f"{V1}/sessions/{sid}/sender-data/bulk",
        json={"items": [{"a": 1, "b": 1}, {"b": 2}], "mode": "replace"},
        headers=alice,
    )
    assert bulk.json()["sender_data"] == {"a": 1, "b": 2}
    bulk = await keyed.client.post(
        f"{V1}/sessions/{sid}/sender-data/bulk", json={"items": [{"c": [1, "x"]}]}, headers=alice
    )
    assert bulk.json()["sender_data"] == {"a": 1, "b": 2, "c": [1, "x"]}

    status = (await keyed.client.get(f"{V1}/sessions/{sid}/status", headers=alice)).json()
    assert status["state"] == "created"
    assert (status["row_count"], status["job"], status["progress"]) == (3, None, None)

    # a session over the same dataset (re-enrichment) shares its rows
    linked = await keyed.client.post(
        f"{V1}/sessions/datasets/{dataset_id}/new-session", json={}, headers=alice
    )
    assert linked.status_code == 201, linked.text
    assert (linked.json()["dataset_id"], linked.json()["row_count"]) == (dataset_id, 3)
    assert linked.json()["name"] == "Q1"
    # deleting the first session keeps the dataset another session uses
    gone = await keyed.client.delete(f"{V1}/sessions/{sid}", headers=alice)
    assert gone.status_code == 200
    assert gone.json()["dataset_deleted"] is False
    assert await DatasetStore(keyed.services.db.engine).get(alice_id, dataset_id) is not None
    left = await keyed.client.get(f"{V1}/sessions/{linked.json()['id']}/results", headers=alice)
    assert len(left.json()["data"]) == 3
    missing = await keyed.client.get(f"{V1}/sessions/{sid}/status", headers=alice)
    assert_envelope(missing, 404, "invalid_request_error", "session_not_found")


async def test_processing_conflicts_credits_and_delete_cascade(idle: Keyed) -> None:
    alice_id, alice = await idle.user(credits=4)
    sid = (await _session(idle, alice))["id"]
    empty = await idle.client.post(
        f"{V1}/sessions/{sid}/process", json={"enrichments": ["validate"]}, headers=alice
    )
    assert_envelope(empty, 409, "invalid_request_error", "session_empty")
    added = await _leads(
        idle,
        alice,
        sid,
        [{"email": f"p{i}@acme.test", "first_name": "P", "last_name": f"N{i}"} for i in range(3)]
        + [{"company": "Nobody"}],
    )
    # verify (1 x 3) + find (3 x 3, no domain or company: not able) -> 3 rows able for verify
    short = await idle.client.post(
        f"{V1}/sessions/{sid}/process",
        json={"enrichments": ["validate", "verify"]},
        headers=alice,
    )
    assert_envelope(short, 402, "payment_required", "insufficient_credits")
    assert (await idle.client.get(f"{V1}/sessions/{sid}/status", headers=alice)).json()[
        "state"
    ] == "created"
    nothing = await idle.client.post(
        f"{V1}/sessions/{sid}/process",
        json={"enrichments": ["linkedin"]},
        headers=alice,
    )
    assert_envelope(nothing, 409, "invalid_request_error", "nothing_to_process")
    started = await idle.client.post(
        f"{V1}/sessions/{sid}/process", json={"enrichments": ["verify"]}, headers=alice
    )
    assert started.status_code == 202, started.text
    accepted = started.json()
    assert (accepted["credits_reserved"], accepted["rows"], accepted["skipped_rows"]) == (3, 3, 1)
    assert started.headers["location"] == accepted["status_url"]
    assert await _balance(idle, alice) == (1, 3, 0)
    again = await idle.client.post(
        f"{V1}/sessions/{sid}/process", json={"enrichments": ["verify"]}, headers=alice
    )
    assert_envelope(again, 409, "invalid_request_error", "session_busy")
    status = (await idle.client.get(f"{V1}/sessions/{sid}/status", headers=alice)).json()
    assert status["state"] == "processing"
    assert status["job"]["id"] == accepted["job_id"]
    assert status["progress"]["total"] == 3
    job = await idle.client.get(accepted["status_url"], headers=alice)
    assert job.status_code == 200
    assert job.json()["status"] == "queued"
    assert len(job.json()["rows"]) == 3

    deleted = await idle.client.delete(f"{V1}/sessions/{sid}", headers=alice)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {
        "id": sid,
        "object": "session",
        "deleted": True,
        "job_cancelled": True,
        "dataset_deleted": True,
    }
    assert await _balance(idle, alice) == (4, 0, 0)
    store = DatasetStore(idle.services.db.engine)
    assert await store.get(alice_id, added["dataset_id"]) is None
    assert await store.rows(added["dataset_id"]) == []
    cancelled = await idle.client.get(f"{V1}/jobs/{accepted['job_id']}", headers=alice)
    assert cancelled.json()["status"] == "cancelled"
    for path in ("status", "results", f"jobs/{accepted['job_id']}/status"):
        gone = await idle.client.get(f"{V1}/sessions/{sid}/{path}", headers=alice)
        assert_envelope(gone, 404, "invalid_request_error", "session_not_found")


async def test_every_session_route_is_404_for_another_user(idle: Keyed) -> None:
    _, alice = await idle.user(credits=10)
    _, bob = await idle.user(credits=10)
    sid = (await _session(idle, alice))["id"]
    dataset_id = (await _leads(idle, alice, sid, [{"email": "a@acme.test"}]))["dataset_id"]
    job_id = (
        await idle.client.post(
            f"{V1}/sessions/{sid}/process", json={"enrichments": ["validate"]}, headers=alice
        )
    ).json()["job_id"]
    bob_sid = (await _session(idle, bob))["id"]
    calls: list[tuple[str, str, Any]] = [
        ("POST", f"sessions/{sid}/leads", {"leads": [{"a": "b"}]}),
        ("POST", f"sessions/{sid}/sender-data", {"sender_data": {}}),
        ("POST", f"sessions/{sid}/sender-data/bulk", {"items": [{}]}),
        ("POST", f"sessions/{sid}/process", {"enrichments": ["validate"]}),
        ("GET", f"sessions/{sid}/status", None),
        ("GET", f"sessions/{sid}/results", None),
        ("GET", f"sessions/{sid}/jobs/{job_id}/status", None),
        ("DELETE", f"sessions/{sid}", None),
        ("POST", f"sessions/datasets/{dataset_id}/new-session", {}),
        ("GET", f"sessions/{bob_sid}/jobs/{job_id}/status", None),  # alice's job, bob's session
        ("GET", "sessions/sess_nope/status", None),
        ("GET", "sessions/sess_01J000000000000000000000000/status", None),
        ("POST", "sessions/datasets/ds_x/new-session", {}),
    ]
    for method, path, body in calls:
        response = await idle.client.request(method, f"{V1}/{path}", json=body, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
        assert_envelope(response, 404, "invalid_request_error", response.json()["error"]["code"])
    # alice's job in alice's other session is not that session's job either
    other = (await _session(idle, alice))["id"]
    cross = await idle.client.get(f"{V1}/sessions/{other}/jobs/{job_id}/status", headers=alice)
    assert_envelope(cross, 404, "invalid_request_error", "job_not_found")
    status = (await idle.client.get(f"{V1}/sessions/{sid}/status", headers=alice)).json()
    assert status["state"] == "processing"


async def test_bad_bodies_and_plans(keyed: Keyed) -> None:
    _, alice = await keyed.user(credits=10)
    sid = (await _session(keyed, alice))["id"]
    bad: list[tuple[str, Any, str]] = [
        ("sessions/create", {"name": " "}, "parameter_invalid"),
        ("sessions/create", {"pipeline_type": "Bad Type"}, "parameter_invalid"),
        ("sessions/create", {"sender_data": {"a": {"b": {"c": 1}}}}, "parameter_invalid"),
        ("sessions/create", {"sender_data": []}, "parameter_invalid"),
        ("sessions/create", {"extra": 1}, "parameter_unknown"),
        (f"sessions/{sid}/leads", {"leads": []}, "parameter_invalid"),
        (f"sessions/{sid}/leads", {"leads": [{"a": 1}] * 1001}, "parameter_invalid"),
        (f"sessions/{sid}/leads", {"leads": [{"a": [[1]]}]}, "parameter_invalid"),
        (f"sessions/{sid}/sender-data", {"sender_data": {}, "mode": "other"}, "parameter_invalid"),
        (f"sessions/{sid}/sender-data/bulk", {"items": []}, "parameter_invalid"),
        (f"sessions/{sid}/process", {"enrichments": []}, "parameter_invalid"),
        (f"sessions/{sid}/process", {"enrichments": ["nope"]}, "parameter_invalid"),
        (
            f"sessions/{sid}/process",
            {"enrichments": ["verify"], "mapping": {"x": "y"}},
            "parameter_invalid",
        ),
    ]
    for path, body, code in bad:
        response = await keyed.client.post(f"{V1}/{path}", json=body, headers=alice)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["code"] in (
            code,
            "parameter_missing",
            "parameter_unknown",
        ), (
            path,
            response.text,
        )
    # too many columns: the lead that would take the dataset over 500 is refused, alone
    for part in range(2):
        lead = {f"c{part}_{i}": "x" for i in range(200)}
        await _leads(keyed, alice, sid, [lead])
    wide = await _leads(
        keyed, alice, sid, [{f"c9_{i}": "x" for i in range(200)}, {"c0_1": "y", "c9_0": "z"}]
    )
    assert wide["rejected"] == [
        {"index": 0, "reason": "its fields would take the dataset over 500 columns"}
    ]
    assert wide["added"] == 1
    # merges add up: sender data past the bound is a 409, replacing works
    big = {f"k{i}": "v" * 10_000 for i in range(60)}
    first = await keyed.client.post(
        f"{V1}/sessions/{sid}/sender-data", json={"sender_data": big}, headers=alice
    )
    assert first.status_code == 200, first.text
    more = {f"m{i}": "v" * 10_000 for i in range(60)}
    grown = await keyed.client.post(
        f"{V1}/sessions/{sid}/sender-data", json={"sender_data": more}, headers=alice
    )
    assert_envelope(grown, 409, "invalid_request_error", "sender_data_too_large")
    swapped = await keyed.client.post(
        f"{V1}/sessions/{sid}/sender-data",
        json={"sender_data": more, "mode": "replace"},
        headers=alice,
    )
    assert swapped.status_code == 200
    for name in ("results?limit=0", "results?limit=101", "results?offset=-1", "results?offset=x"):
        response = await keyed.client.get(f"{V1}/sessions/{sid}/{name}", headers=alice)
        assert_envelope(response, 400, "invalid_request_error", "parameter_invalid")
    # a free plan cannot run verify (a paid bulk kind); validate it can
    _, free = await keyed.user(plan="free", credits=10)
    fsid = (await _session(keyed, free))["id"]
    await _leads(keyed, free, fsid, [{"email": "a@acme.test"}])
    denied = await keyed.client.post(
        f"{V1}/sessions/{fsid}/process", json={"enrichments": ["verify"]}, headers=free
    )
    assert_envelope(denied, 403, "permission_error", "plan_forbidden")
    # a key limited to another group cannot touch sessions
    key = await keyed.key(alice, ["credits:read"])
    scoped = await keyed.client.get(f"{V1}/sessions/{sid}/status", headers=key)
    assert_envelope(scoped, 403, "permission_error", "insufficient_scope")
    reader = await keyed.key(alice, ["sessions:read"])
    assert (
        await keyed.client.get(f"{V1}/sessions/{sid}/status", headers=reader)
    ).status_code == 200
    write = await keyed.client.post(f"{V1}/sessions/create", json={}, headers=reader)
    assert_envelope(write, 403, "permission_error", "insufficient_scope")


async def test_a_cancelled_job_cancels_its_session(idle: Keyed) -> None:
    _, alice = await idle.user(credits=5)
    sid = (await _session(idle, alice))["id"]
    await _leads(idle, alice, sid, [{"email": "a@acme.test"}, {"email": "b@acme.test"}])
    started = await idle.client.post(
        f"{V1}/sessions/{sid}/process", json={"enrichments": ["validate"]}, headers=alice
    )
    job_id = started.json()["job_id"]
    cancelled = await idle.client.post(f"{V1}/jobs/{job_id}/cancel", headers=alice)
    assert cancelled.status_code == 200, cancelled.text
    status = (await idle.client.get(f"{V1}/sessions/{sid}/status", headers=alice)).json()
    assert status["state"] == "cancelled"
    assert status["job"]["status"] == "cancelled"
    assert await _balance(idle, alice) == (5, 0, 0)
    again = await idle.client.post(
        f"{V1}/sessions/{sid}/process", json={"enrichments": ["validate"]}, headers=alice
    )
    assert_envelope(again, 409, "invalid_request_error", "session_busy")
