"""Verifying a dataset's addresses as one job and pruning it by risk, through real HTTP on
SQLite and PostgreSQL: risk columns written back into the rows, credits exact (rows without an
address and cached verdicts free, unreachable servers uncharged), prune with re-indexing, and
the refusals (archived, busy, bad bodies, no email column, credits). An in-process MX (aiosmtpd)
and the stub resolver, as in test_keyed_jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings, wait_for_job
from lab.fakesmtp import Behaviour, fake_smtp
from lab.probers import lab_prober
from lab.stubdns import STUB_DOMAINS, StubResolver
from tests_server_helpers import assert_envelope

from emailintel.models import DnsFacts, MxRecord
from server.datasets.store import DatasetStore, NewRow
from server.settings import Settings

KNOWN = frozenset({"ann.lee@fake.test", "bo@fake.test"})
DOMAINS = {
    **STUB_DOMAINS,
    "fake.test": DnsFacts(
        domain="fake.test",
        status="ok",
        mx=(MxRecord(preference=10, host="mx.fake.test", addresses=("127.0.0.1",)),),
    ),
    "down.test": DnsFacts(
        domain="down.test",
        status="ok",
        mx=(MxRecord(preference=10, host="mx.down.test", addresses=("127.0.0.9",)),),
    ),
}
INVALID = "invalid_request_error"
Headers = dict[str, str]


@pytest.fixture(scope="module")
def mx() -> Iterator[Any]:
    with fake_smtp(Behaviour(known_users=KNOWN)) as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="function")
async def app(backend_settings: Settings, tmp_path: Path, mx: Any) -> AsyncIterator[Keyed]:
    settings = keyed_settings(backend_settings, tmp_path)
    prober = lab_prober(port=mx.port)
    async with keyed_app(settings, resolver=StubResolver(DOMAINS), prober=prober) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="function")
async def idle(backend_settings: Settings, tmp_path: Path, mx: Any) -> AsyncIterator[Keyed]:
    """No worker: a queued verification stays active."""
    settings = keyed_settings(backend_settings, tmp_path, embedded_worker=False)
    prober = lab_prober(port=mx.port)
    async with keyed_app(settings, resolver=StubResolver(DOMAINS), prober=prober) as running:
        yield running


async def _dataset(
    keyed: Keyed,
    headers: Headers,
    rows: list[dict[str, str]],
    *,
    columns: tuple[str, ...] = ("Name", "Email"),
    mapping: dict[str, str] | None = None,
) -> str:
    me = await keyed.client.get("/api/v1/auth/me", headers=headers)
    store = DatasetStore(keyed.services.db.engine)
    made = await store.create(
        me.json()["user_id"],
        name="To verify",
        source_type="upload_csv",
        pipeline_type="verification",
        columns=columns,
        mapping=mapping if mapping is not None else {"email": "Email"},
    )
    await store.append(made.id, [NewRow(i + 2, row) for i, row in enumerate(rows)])
    return made.id


async def _balance(keyed: Keyed, headers: Headers) -> tuple[int, int, int]:
    """(used, held, available) once finished jobs' holds have settled."""
    for _ in range(400):
        body = (await keyed.client.get("/api/v1/credits/balance", headers=headers)).json()
        if body["held_credits"] == 0:
            return body["used_credits"], body["held_credits"], body["available_credits"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"holds never settled: {body}")


async def _rows(keyed: Keyed, headers: Headers, dataset_id: str) -> list[dict[str, Any]]:
    page = await keyed.client.get(
        f"/api/v1/datasets/{dataset_id}/rows", params={"limit": 1000}, headers=headers
    )
    assert page.status_code == 200, page.text
    rows: list[dict[str, Any]] = page.json()["data"]
    return rows


ROWS = [
    {"Name": "Ann", "Email": "ann.lee@fake.test"},
    {"Name": "Nobody", "Email": " nobody@fake.test "},
    {"Name": "Empty", "Email": ""},
    {"Name": "Syntax", "Email": "not an address"},
    {"Name": "Down", "Email": "x@down.test"},
    {"Name": "Bo", "Email": "bo@fake.test"},
    {"Name": "No column"},
    {"Name": "Huge", "Email": "a" * 400 + "@fake.test"},
]


async def test_verify_writes_risk_into_rows_and_charges_answered_rows(app: Keyed) -> None:
    _, session = await app.user(credits=20)
    made = await _dataset(app, session, ROWS)
    accepted = await app.client.post(f"/api/v1/email-verification/dataset/{made}", headers=session)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["credits_reserved"] == 5
    assert (body["rows_to_verify"], body["skipped_no_email"], body["skipped_invalid"]) == (5, 2, 1)
    assert (body["dataset_id"], body["email_column"]) == (made, "Email")
    assert accepted.headers["location"] == f"/api/v1/jobs/{body['job_id']}"
    assert accepted.headers["retry-after"]
    status = await wait_for_job(app.client, accepted.headers["location"], session)
    assert status["status"] == "succeeded"
    assert status["kind"] == "email.dataset_verify"
    progress = status["progress"]
    assert (progress["total"], progress["done"], progress["failed"]) == (5, 4, 1)
    assert await _balance(app, session) == (4, 0, 16)

    rows = await _rows(app, session, made)
    added = {row["data"]["Name"]: row["added"] for row in rows}
    assert added["Ann"]["risk"] == "low"
    assert added["Ann"]["verdict"] == "valid"
    assert added["Ann"]["smtp_status"] == "accepted"
    assert 0 <= added["Ann"]["risk_score"] < 50
    assert added["Nobody"]["risk"] == "high"
    assert added["Nobody"]["smtp_status"] == "mailbox_not_found"
    assert added["Syntax"]["verdict"] == "invalid"
    assert added["Down"]["risk"] is None
    assert added["Down"]["reason"] in ("smtp_unavailable", "smtp_timeout")
    assert added["Bo"]["risk"] == "low"
    assert added["Empty"] == added["No column"] == added["Huge"] == {}
    meta = (await app.client.get(f"/api/v1/datasets/{made}", headers=session)).json()
    assert meta["added_columns"] == ["risk", "risk_score", "verdict", "smtp_status", "reason"]

    again = await app.client.post(
        f"/api/v1/email-verification/dataset/{made}", json={}, headers=session
    )
    assert again.status_code == 202, again.text
    status = await wait_for_job(app.client, again.headers["location"], session)
    progress = status["progress"]
    assert (progress["done"], progress["skipped"], progress["failed"]) == (0, 4, 1)  # cached
    assert await _balance(app, session) == (4, 0, 16)
    listed = await app.client.get(
        "/api/v1/jobs", params={"kind": "email.dataset_verify"}, headers=session
    )
    assert len(listed.json()["data"]) == 2


async def test_prune_by_level_and_score_reindexes(app: Keyed) -> None:
    _, session = await app.user(credits=20)
    made = await _dataset(app, session, ROWS)
    accepted = await app.client.post(f"/api/v1/email-verification/dataset/{made}", headers=session)
    await wait_for_job(app.client, accepted.headers["location"], session)
    url = f"/api/v1/email-verification/dataset/{made}/prune"

    dry = await app.client.post(url, json={"max_risk": "medium", "dry_run": True}, headers=session)
    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "dataset_id": made,
        "dry_run": True,
        "max_risk": "medium",
        "deleted": 2,  # nobody@ and the syntax error
        "kept": 6,
        "unverified": 4,  # empty, down, no column, huge
        "row_count": 8,
    }
    assert len(await _rows(app, session, made)) == 8
    done = await app.client.post(url, json={"max_risk": "medium"}, headers=session)
    assert {k: done.json()[k] for k in ("deleted", "kept", "unverified", "row_count")} == {
        "deleted": 2,
        "kept": 6,
        "unverified": 4,
        "row_count": 6,
    }
    rows = await _rows(app, session, made)
    assert [r["idx"] for r in rows] == list(range(6))
    assert [r["data"]["Name"] for r in rows] == ["Ann", "Empty", "Down", "Bo", "No column", "Huge"]
    meta = (await app.client.get(f"/api/v1/datasets/{made}", headers=session)).json()
    assert meta["row_count"] == 6

    by_score = await app.client.post(url, json={"max_risk": 0}, headers=session)
    assert by_score.status_code == 200, by_score.text
    low_scores = [r for r in rows if r["added"].get("risk_score") == 0]
    assert by_score.json()["deleted"] == 2 - len(low_scores)
    rows = await _rows(app, session, made)
    assert [r["idx"] for r in rows] == list(range(len(rows)))
    download = await app.client.get(
        f"/api/v1/datasets/{made}/download", params={"format": "json"}, headers=session
    )
    assert [row["Name"] for row in download.json()["data"]] == [r["data"]["Name"] for r in rows]
    as_float = await app.client.post(url, json={"max_risk": 100.0}, headers=session)
    assert as_float.status_code == 200
    assert as_float.json()["deleted"] == 0


async def test_the_email_column_mapped_named_or_detected(app: Keyed) -> None:
    _, session = await app.user(credits=20)
    rows = [{"Contact": "Ann", "Work Email": "ann.lee@fake.test", "Alt": "bo@fake.test"}]
    columns = ("Contact", "Work Email", "Alt")
    detected = await _dataset(app, session, rows, columns=columns, mapping={})
    answer = await app.client.post(
        f"/api/v1/email-verification/dataset/{detected}", headers=session
    )
    assert answer.json()["email_column"] == "Work Email"
    await wait_for_job(app.client, answer.headers["location"], session)
    busy = await app.client.post(
        f"/api/v1/email-verification/dataset/{detected}",
        json={"email_column": "Alt"},
        headers=session,
    )
    assert busy.status_code == 202, busy.text
    assert busy.json()["email_column"] == "Alt"
    by_values = await _dataset(
        app, session, [{"a": "x", "b": "ann.lee@fake.test"}], columns=("a", "b"), mapping={}
    )
    found = await app.client.post(
        f"/api/v1/email-verification/dataset/{by_values}", headers=session
    )
    assert found.json()["email_column"] == "b"
    stale = await _dataset(
        app, session, [{"b": "ann.lee@fake.test"}], columns=("b",), mapping={"email": "gone"}
    )
    fallback = await app.client.post(f"/api/v1/email-verification/dataset/{stale}", headers=session)
    assert fallback.json()["email_column"] == "b"


async def test_refusals_hold_nothing(app: Keyed) -> None:
    _, session = await app.user(credits=2)
    made = await _dataset(app, session, ROWS)
    url = f"/api/v1/email-verification/dataset/{made}"
    for body in (
        {"email_column": ""},
        {"email_column": 5},
        {"other": 1},
        [],
        {"email_column": "x" * 201},
    ):
        refused = await app.client.post(url, json=body, headers=session)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["type"] == INVALID
    assert_envelope(
        await app.client.post(url, content=b"{nope", headers=session), 400, INVALID, "invalid_json"
    )
    unknown = await app.client.post(url, json={"email_column": "Phone"}, headers=session)
    assert_envelope(unknown, 400, INVALID, "parameter_invalid")
    assert unknown.json()["error"]["param"] == "email_column"
    short = await app.client.post(url, headers=session)  # 5 rows, 2 credits
    assert_envelope(short, 402, "payment_required", "insufficient_credits")
    no_mail = await _dataset(app, session, [{"a": "x"}], columns=("a",), mapping={})
    missing = await app.client.post(
        f"/api/v1/email-verification/dataset/{no_mail}", headers=session
    )
    assert_envelope(missing, 400, INVALID, "email_column_unknown")
    prune = f"{url}/prune"
    for body in (
        {},
        {"max_risk": "extreme"},
        {"max_risk": 101},
        {"max_risk": -1},
        {"max_risk": 1.5},
        {"max_risk": True},
        {"max_risk": "low", "dry_run": "yes"},
        {"max_risk": "low", "other": 1},
    ):
        refused = await app.client.post(prune, json=body, headers=session)
        assert refused.status_code == 400, (body, refused.text)
    assert (await app.client.get("/api/v1/jobs", headers=session)).json()["data"] == []
    assert await _balance(app, session) == (0, 0, 2)
    free_id, free = await app.user(plan="free", credits=20)
    del free_id
    free_set = await _dataset(app, free, ROWS[:1])
    forbidden = await app.client.post(
        f"/api/v1/email-verification/dataset/{free_set}", headers=free
    )
    assert forbidden.status_code == 403, forbidden.text


async def test_racing_verifications_of_one_dataset_start_one_job(idle: Keyed) -> None:
    """Requests that all pass the busy check before any job exists: the database lets one
    enqueue through; the others get 409 and hold nothing."""
    app = idle
    _, session = await app.user(credits=100)
    made = await _dataset(app, session, ROWS)
    url = f"/api/v1/email-verification/dataset/{made}"
    answers = await asyncio.gather(*(app.client.post(url, headers=session) for _ in range(6)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202, 409, 409, 409, 409, 409], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_envelope(answer, 409, INVALID, "dataset_busy")
    accepted = next(a.json() for a in answers if a.status_code == 202)
    body = (await app.client.get("/api/v1/credits/balance", headers=session)).json()
    assert body["held_credits"] == accepted["credits_reserved"] > 0
    assert body["available_credits"] == 100 - accepted["credits_reserved"]


async def test_archived_and_busy_datasets_are_409(idle: Keyed) -> None:
    app = idle
    _, session = await app.user(credits=20)
    made = await _dataset(app, session, ROWS)
    url = f"/api/v1/email-verification/dataset/{made}"
    await app.client.post(f"/api/v1/datasets/{made}/archive", headers=session)
    assert_envelope(await app.client.post(url, headers=session), 409, INVALID, "dataset_archived")
    assert_envelope(
        await app.client.post(f"{url}/prune", json={"max_risk": "low"}, headers=session),
        409,
        INVALID,
        "dataset_archived",
    )
    await app.client.post(f"/api/v1/datasets/{made}/restore", headers=session)
    queued = await app.client.post(url, headers=session)
    assert queued.status_code == 202, queued.text
    assert_envelope(await app.client.post(url, headers=session), 409, INVALID, "dataset_busy")
    assert_envelope(
        await app.client.post(f"{url}/prune", json={"max_risk": "low"}, headers=session),
        409,
        INVALID,
        "dataset_busy",
    )
    dry = await app.client.post(
        f"{url}/prune", json={"max_risk": "low", "dry_run": True}, headers=session
    )
    assert dry.status_code == 200
    assert dry.json()["deleted"] == 0
    other = await _dataset(app, session, ROWS[:1])
    assert (
        await app.client.post(
            f"/api/v1/email-verification/dataset/{other}/prune",
            json={"max_risk": "low"},
            headers=session,
        )
    ).status_code == 200  # another dataset is not busy
    cancelled = await app.client.post(
        f"/api/v1/jobs/{queued.json()['job_id']}/cancel", headers=session
    )
    assert cancelled.json()["status"] == "cancelled"
    after = await app.client.post(f"{url}/prune", json={"max_risk": "low"}, headers=session)
    assert after.status_code == 200, after.text
    assert await _balance(app, session) == (0, 0, 20)
