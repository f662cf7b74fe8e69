"""A session processed end to end: validate, verify, find and LinkedIn over the dataset's rows
as one job, credits reserved per row and captured per enrichment answered (exactly), results in
the rows' added columns; re-processing a completed session. An in-process MX (aiosmtpd), the
stub resolver and the search lab, as the bulk job tests use."""

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
from lab.searchlab import SearchLab
from lab.stubdns import STUB_DOMAINS, StubResolver

from emailintel.models import DnsFacts, MxRecord
from emailintel.search import Backoff, engine_from_env
from server.settings import Settings

V1 = "/api/v1"
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
    async with keyed_app(
        settings, resolver=StubResolver(DOMAINS), prober=lab_prober(port=mx.port), search=engine
    ) as running:
        yield running


async def _settled(app: Keyed, headers: dict[str, str]) -> tuple[int, int, int]:
    """(available, held, used) once the job's hook settled its hold."""
    for _ in range(400):
        b = (await app.client.get(f"{V1}/credits/balance", headers=headers)).json()
        if b["held_credits"] == 0:
            return b["available_credits"], b["held_credits"], b["used_credits"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"holds never settled: {b}")


async def _state(app: Keyed, sid: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await app.client.get(f"{V1}/sessions/{sid}/status", headers=headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


LEADS = [
    {"Email": "ann.lee@fake.test", "First Name": "Ann", "Last Name": "Lee", "Website": "fake.test"},
    {"Email": "nobody@fake.test", "Full Name": "No Body", "Website": "https://fake.test/"},
    {"Email": "x@down.test"},
    {"Company": "Nobody Corp"},
]


async def test_processing_annotates_rows_and_charges_what_was_answered(app: Keyed) -> None:
    _, alice = await app.user(credits=30)
    sid = (await app.client.post(f"{V1}/sessions/create", json={}, headers=alice)).json()["id"]
    added = await app.client.post(
        f"{V1}/sessions/{sid}/leads", json={"leads": LEADS}, headers=alice
    )
    assert added.json()["added"] == 4
    started = await app.client.post(
        f"{V1}/sessions/{sid}/process",
        json={
            "enrichments": ["validate", "verify", "find"],
            "mapping": {
                "email": "Email",
                "first_name": "First Name",
                "last_name": "Last Name",
                "name": "Full Name",
                "domain": "Website",
            },
        },
        headers=alice,
    )
    assert started.status_code == 202, started.text
    accepted = started.json()
    # validate 3 x 1, verify 3 x 1, find 2 x 3 (rows 0 and 1 have a name and a domain)
    assert (accepted["credits_reserved"], accepted["rows"], accepted["skipped_rows"]) == (12, 3, 1)
    job = await wait_for_job(app.client, accepted["status_url"], alice)
    assert job["status"] == "succeeded", job
    assert (job["progress"]["done"], job["progress"]["failed"]) == (3, 0)
    assert job["skipped_invalid"] == 1
    by_row = {row["result"]["row"]: row["result"] for row in job["rows"]}
    assert by_row[0]["charged"] == ["validate", "verify", "find"]
    assert by_row[1]["charged"] == ["validate", "verify", "find"]
    assert by_row[2]["charged"] == ["validate"]
    assert by_row[2]["errors"]["verify"] in ("smtp_unavailable", "smtp_timeout")
    # delivered: validate 3 + verify 2 + find 2 x 3 = 11 of the 12 held
    assert await _settled(app, alice) == (19, 0, 11)

    status = await _state(app, sid, alice)
    assert status["state"] == "completed"
    assert status["progress"]["done"] == 3
    rows = (await app.client.get(f"{V1}/sessions/{sid}/results", headers=alice)).json()
    assert rows["added_columns"][:2] == ["risk", "risk_score"]
    first, second, third, fourth = (row["added"] for row in rows["data"])
    assert first["found_email"] == "ann.lee@fake.test"
    assert first["mailbox_exists"] is True
    assert first["verify_error"] is None
    assert second["found_email"] is None
    assert second["mailbox_exists"] is False
    assert third["risk"] is not None
    assert third["verify_error"] in ("smtp_unavailable", "smtp_timeout")
    assert fourth == {}
    assert rows["data"][0]["data"] == LEADS[0]

    # completed: processing again is allowed, with a new job
    again = await app.client.post(
        f"{V1}/sessions/{sid}/process", json={"enrichments": ["validate"]}, headers=alice
    )
    assert again.status_code == 202, again.text
    assert again.json()["credits_reserved"] == 3  # columns guessed: Email
    second_job = await wait_for_job(app.client, again.json()["status_url"], alice)
    assert second_job["status"] == "succeeded"
    assert await _settled(app, alice) == (16, 0, 14)
    assert (await _state(app, sid, alice))["state"] == "completed"
    old = await app.client.get(accepted["status_url"] + "?include_rows=false", headers=alice)
    assert old.status_code == 200
    assert old.json()["rows"] is None


async def test_linkedin_enrichment(app: Keyed) -> None:
    _, alice = await app.user(credits=10)
    sid = (await app.client.post(f"{V1}/sessions/create", json={}, headers=alice)).json()["id"]
    await app.client.post(
        f"{V1}/sessions/{sid}/leads",
        json={"leads": [{"name": "Ann Lee", "company": "Acme", "title": "CTO"}]},
        headers=alice,
    )
    started = await app.client.post(
        f"{V1}/sessions/{sid}/process", json={"enrichments": ["linkedin"]}, headers=alice
    )
    assert started.status_code == 202, started.text
    assert started.json()["credits_reserved"] == 3
    job = await wait_for_job(app.client, started.json()["status_url"], alice)
    assert job["status"] == "succeeded", job
    rows = (await app.client.get(f"{V1}/sessions/{sid}/results", headers=alice)).json()
    assert "linkedin_url" in rows["data"][0]["added"]
    assert job["rows"][0]["result"]["charged"] == ["linkedin"]
    charged = 3
    assert await _settled(app, alice) == (10 - charged, 0, charged)
