"""Job routes: find, verify, bulk find, lead batch; credits reserved at enqueue and settled by
what was delivered; cancel; ownership. An in-process MX (aiosmtpd) and the stub resolver, so no
daemon is needed; the PostgreSQL runs are lab tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from keyed_helpers import Keyed, keyed_app, keyed_settings, wait_for_job
from lab.fakesmtp import Behaviour, fake_smtp
from lab.probers import lab_prober
from lab.searchlab import SearchLab
from lab.stubdns import STUB_DOMAINS, StubResolver
from tests_server_helpers import assert_envelope

from emailintel.models import DnsFacts, MxRecord
from emailintel.search import Backoff, engine_from_env
from server.prospects.models import ProspectIn
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


@pytest.fixture(scope="module")
def mx() -> Iterator[Any]:
    with fake_smtp(Behaviour(known_users=KNOWN)) as fake:
        yield fake


@pytest.fixture(scope="module")
def search() -> Iterator[SearchLab]:
    with SearchLab() as lab:
        yield lab


@pytest_asyncio.fixture(loop_scope="function")
async def app(
    backend_settings: Settings, tmp_path: Path, mx: Any, search: SearchLab
) -> AsyncIterator[Keyed]:
    settings = keyed_settings(backend_settings, tmp_path)
    engine = engine_from_env(search.env("duckduckgo"), backoff=Backoff(retries=1, base=0.0))
    prober = lab_prober(port=mx.port)
    async with keyed_app(
        settings, resolver=StubResolver(DOMAINS), prober=prober, search=engine
    ) as running:
        yield running


async def _balance(app: Keyed, headers: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = (await app.client.get("/api/v1/credits/balance", headers=headers)).json()
    return body


async def _settled(app: Keyed, headers: dict[str, str]) -> dict[str, Any]:
    """The balance once the finished jobs' terminal hooks have settled their holds (the hook
    runs just after a job is marked finished)."""
    import asyncio

    for _ in range(400):
        balance = await _balance(app, headers)
        if balance["held_credits"] == 0:
            return balance
        await asyncio.sleep(0.05)
    raise AssertionError(f"holds never settled: {balance}")


async def test_find_job_answers_and_charges_three(app: Keyed) -> None:
    _, session = await app.user(credits=10)
    body = {"first_name": "Ann", "last_name": "Lee", "domain": "fake.test"}
    accepted = await app.client.post("/api/v1/email-finder/find", json=body, headers=session)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["retry-after"] == "2"
    url = accepted.headers["location"]
    assert url == accepted.json()["status_url"]
    assert accepted.json()["credits_reserved"] == 3
    assert (await _balance(app, session))["held_credits"] in (0, 3)
    job = await wait_for_job(app.client, url, session)
    assert job["status"] == "succeeded", job
    assert job["result"]["found"] is True
    assert job["result"]["email"] == "ann.lee@fake.test"
    balance = await _settled(app, session)
    assert (balance["available_credits"], balance["held_credits"], balance["used_credits"]) == (
        7,
        0,
        3,
    )


async def test_failed_job_returns_its_credits(app: Keyed) -> None:
    _, session = await app.user(credits=5)
    accepted = await app.client.post(
        "/api/v1/email-finder/verify", json={"email": "ann@down.test"}, headers=session
    )
    job = await wait_for_job(app.client, accepted.headers["location"], session)
    assert job["status"] == "failed"
    assert job["error"]["code"] in ("smtp_unavailable", "smtp_timeout")
    balance = await _settled(app, session)
    assert (balance["available_credits"], balance["held_credits"], balance["used_credits"]) == (
        5,
        0,
        0,
    )


async def test_verify_job(app: Keyed) -> None:
    _, session = await app.user(credits=1)
    accepted = await app.client.post(
        "/api/v1/email-finder/verify", json={"email": "bo@fake.test"}, headers=session
    )
    job = await wait_for_job(app.client, accepted.headers["location"], session)
    assert job["status"] == "succeeded"
    assert job["result"]["smtp"]["accepted"] is True
    assert (await _settled(app, session))["used_credits"] == 1
    # the verdict is cached: asked again (any case), it is answered at once and free
    again = await app.client.post(
        "/api/v1/email-finder/verify", json={"email": "BO@fake.test"}, headers=session
    )
    assert again.status_code == 200
    assert again.json()["cached"] is True
    assert again.json()["result"] == job["result"]
    assert (await _balance(app, session))["used_credits"] == 1


async def test_verdict_cache_off(backend_settings: Settings, tmp_path: Path, mx: Any) -> None:
    settings = keyed_settings(backend_settings, tmp_path, verify_cache_seconds=0)
    prober = lab_prober(port=mx.port)
    async with keyed_app(settings, resolver=StubResolver(DOMAINS), prober=prober) as app:
        _, session = await app.user(credits=2)
        for _ in range(2):
            queued = await app.client.post(
                "/api/v1/email-finder/verify", json={"email": "bo@fake.test"}, headers=session
            )
            assert queued.status_code == 202
            await wait_for_job(app.client, queued.headers["location"], session)
        assert (await _settled(app, session))["used_credits"] == 2


async def test_bulk_charges_only_answered_rows(app: Keyed) -> None:
    await app.services.prospects.add(
        [ProspectIn(name="X Y", company="Fake Inc", domain="fake.test", tags=["t"])]
    )
    _, session = await app.user(credits=20)
    rows = [
        {"first_name": "Ann", "last_name": "Lee", "domain": "fake.test"},
        {"name": "Bo Chan", "company": "Fake Inc"},
        {"first_name": "Cy", "last_name": "Doe", "company": "Nobody Corp"},
        {"first_name": "Dee"},
        {"company": "Fake Inc"},
    ]
    accepted = await app.client.post(
        "/api/v1/email-finder/bulk", json={"rows": rows}, headers=session
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["credits_reserved"] == 9  # three usable rows
    status = await wait_for_job(app.client, accepted.headers["location"], session)
    assert status["skipped_invalid"] == 2
    assert status["skipped_unresolved"] == 1
    assert status["progress"]["done"] == 2
    found = {row["result"]["email"] for row in status["rows"] if row["result"]}
    assert "ann.lee@fake.test" in found
    balance = await _settled(app, session)
    assert (balance["used_credits"], balance["held_credits"], balance["available_credits"]) == (
        6,
        0,
        14,
    )
    counts = await app.client.get(
        accepted.headers["location"] + "?include_rows=false", headers=session
    )
    assert counts.json()["rows"] is None


async def test_bulk_verify_charges_one_credit_per_answered_address(app: Keyed) -> None:
    _, session = await app.user(credits=10)
    emails = ["ann.lee@fake.test", "nobody@fake.test", "not an address", "x@down.test"]
    accepted = await app.client.post(
        "/api/v1/email-verification/bulk", json={"emails": emails}, headers=session
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["credits_reserved"] == 4
    status = await wait_for_job(app.client, accepted.headers["location"], session)
    assert status["status"] == "succeeded"
    assert (status["progress"]["done"], status["progress"]["failed"]) == (3, 1)
    rows = {row["input"]: row for row in status["rows"]}
    assert rows["ann.lee@fake.test"]["result"]["verdict"] == "valid"
    assert rows["ann.lee@fake.test"]["result"]["smtp"]["accepted"] is True
    assert rows["nobody@fake.test"]["result"]["verdict"] == "invalid"
    assert rows["nobody@fake.test"]["result"]["smtp"]["mailbox_not_found"] is True
    assert rows["not an address"]["result"]["verdict"] == "invalid"  # answered: syntax
    assert rows["x@down.test"]["status"] == "failed"  # unreachable: not answered, not charged
    assert rows["x@down.test"]["error"] in ("smtp_unavailable", "smtp_timeout")
    balance = await _settled(app, session)
    assert (balance["used_credits"], balance["held_credits"], balance["available_credits"]) == (
        3,
        0,
        7,
    )
    cached = await app.client.post(
        "/api/v1/email-finder/verify", json={"email": "ann.lee@fake.test"}, headers=session
    )
    assert cached.status_code == 200  # the bulk run stored its verdicts
    assert cached.json()["cached"] is True


async def test_bulk_verify_refuses_bad_bodies_and_other_kinds(app: Keyed) -> None:
    _, session = await app.user(credits=3)
    for body in ({"emails": []}, {"emails": ["a@b.c"] * 10_001}, {"emails": [1]}, {"rows": []}):
        refused = await app.client.post(
            "/api/v1/email-verification/bulk", json=body, headers=session
        )
        assert refused.status_code in (400, 413, 422), refused.text
        assert refused.json()["error"]["type"] == "invalid_request_error"
    short = await app.client.post(
        "/api/v1/email-verification/bulk", json={"emails": ["a@fake.test"] * 4}, headers=session
    )
    assert_envelope(short, 402, "payment_required", "insufficient_credits")
    assert (await app.client.get("/api/v1/jobs", headers=session)).json()["data"] == []
    find = await app.client.post(
        "/api/v1/email-finder/verify", json={"email": "bo@fake.test"}, headers=session
    )
    wrong_kind = await app.client.get(
        f"/api/v1/email-verification/bulk/{find.json()['job_id']}/status", headers=session
    )
    assert_envelope(wrong_kind, 404, "invalid_request_error", "job_not_found")


async def test_lead_batch(app: Keyed) -> None:
    _, session = await app.user(credits=6)
    names = [
        {"name": "Priya Sharma", "company": "Northwind Traders"},
        {"name": "Nobody Atall", "company": "Northwind Traders"},
    ]
    accepted = await app.client.post(
        "/api/v1/lead-finder/batch", json={"names": names}, headers=session
    )
    assert accepted.status_code == 202, accepted.text
    status = await wait_for_job(app.client, accepted.headers["location"], session)
    assert status["progress"]["done"] == 2
    best = status["rows"][0]["result"]["best"]
    assert best["url"] == "https://www.linkedin.com/in/priya-sharma"
    assert (await _settled(app, session))["used_credits"] == 6


async def test_refusals_create_no_job_and_hold_nothing(app: Keyed) -> None:
    _, free = await app.user(plan="free")
    refused = await app.client.post(
        "/api/v1/email-finder/find",
        json={"first_name": "A", "last_name": "B", "domain": "fake.test"},
        headers=free,
    )
    assert_envelope(refused, 403, "permission_error", "plan_forbidden")
    _, poor = await app.user(credits=2)
    short = await app.client.post(
        "/api/v1/email-finder/find",
        json={"first_name": "A", "last_name": "B", "domain": "fake.test"},
        headers=poor,
    )
    assert_envelope(short, 402, "payment_required", "insufficient_credits")
    assert (await app.client.get("/api/v1/jobs", headers=poor)).json()["data"] == []
    empty = await app.client.post(
        "/api/v1/email-finder/bulk", json={"rows": [{"first_name": "A"}]}, headers=poor
    )  # nothing usable: a job that skips every row and costs nothing
    assert empty.json()["credits_reserved"] == 0
    status = await wait_for_job(app.client, empty.headers["location"], poor)
    assert (status["status"], status["skipped_invalid"], status["progress"]["total"]) == (
        "succeeded",
        1,
        0,
    )
    assert (await _settled(app, poor))["available_credits"] == 2


async def test_jobs_list_get_cancel_and_ownership(
    backend_settings: Settings, tmp_path: Path
) -> None:
    settings = keyed_settings(backend_settings, tmp_path, embedded_worker=False)
    async with keyed_app(settings, resolver=StubResolver(DOMAINS), prober=lab_prober()) as app:
        _, alice = await app.user(credits=10)
        _, bob = await app.user(credits=10)
        accepted = await app.client.post(
            "/api/v1/email-finder/verify", json={"email": "bo@fake.test"}, headers=alice
        )
        job_id = accepted.json()["job_id"]
        listed = (await app.client.get("/api/v1/jobs", headers=alice)).json()
        assert [j["id"] for j in listed["data"]] == [job_id]
        assert (await app.client.get("/api/v1/jobs", headers=bob)).json()["data"] == []
        for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/email-finder/verify/{job_id}"):
            assert (await app.client.get(path, headers=bob)).status_code == 404
        assert (
            await app.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bob)
        ).status_code == 404
        wrong_kind = await app.client.get(
            f"/api/v1/email-finder/bulk/{job_id}/status", headers=alice
        )
        assert wrong_kind.status_code == 404
        assert (await _balance(app, alice))["held_credits"] == 1
        cancelled = await app.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
        assert cancelled.json()["status"] == "cancelled"
        again = await app.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
        assert_envelope(again, 409, "invalid_request_error", "job_finished")
        # the terminal hook returns the hold (delivered by the cancel itself, or a worker)
        await app.services.jobs.deliver_terminal("test-worker", job_id)
        balance = await _settled(app, alice)
        assert (balance["held_credits"], balance["available_credits"]) == (0, 10)
