"""A campaign's leads and the playground over HTTP on SQLite and PostgreSQL: adding (inline and
from a dataset: deduplicated, invalid ones left out), the list with its status filter and both
paginations, drafts awaiting approval and approve / unapprove / reset as the contract says; and
the domain-in-use lookup the mail routes call."""

from __future__ import annotations

import time
from typing import Any

from camp_api_support import URL, add_leads, make, ready, verified_alias
from factory import StepSpec, add_draft, add_send, make_campaign
from keyed_helpers import Keyed
from sqlalchemy import select, update
from tests_server_helpers import assert_envelope

from server.campaigns.domain_use import campaigns_using_domain
from server.campaigns.store import CampaignStore
from server.datasets.store import DatasetStore, NewRow
from server.db.models import CampaignDraft, CampaignEvent, CampaignLead, CampaignSend
from server.db.tx import write_transaction


async def _dataset(keyed: Keyed, user_id: str, emails: list[str], mapped: bool = True) -> str:
    store = DatasetStore(keyed.services.db.engine)
    made = await store.create(
        user_id,
        name="leads",
        source_type="upload_csv",
        pipeline_type="enrichment",
        columns=["Work Email", "First Name"],
        mapping={"email": "Work Email"} if mapped else {},
    )
    await store.append(
        made.id,
        [
            NewRow(line=i + 2, data={"Work Email": e, "First Name": f"N{i}"})
            for i, e in enumerate(emails)
        ],
    )
    return made.id


async def test_add_inline_and_from_a_dataset(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    campaign = await make(keyed, alice)
    url = f"{URL}{campaign['id']}/leads"
    added = await add_leads(
        keyed,
        alice,
        campaign["id"],
        [
            {"email": " Bo@Client.test ", "data": {"first_name": "Bo"}},
            {"email": "bo@client.test"},
            {"email": "not-an-address"},
            {"email": "cy@client.test"},
        ],
    )
    assert added == {
        "added": 2,
        "duplicates": 1,
        "invalid": 1,
        "invalid_examples": ["not-an-address"],
        "total_leads": 2,
    }
    dataset_id = await _dataset(keyed, user_id, ["cy@client.test", "dd@client.test", ""])
    from_dataset = await keyed.client.post(url, json={"dataset_id": dataset_id}, headers=alice)
    assert from_dataset.status_code == 201, from_dataset.text
    assert from_dataset.json()["added"] == 1
    assert from_dataset.json()["duplicates"] == 1
    assert from_dataset.json()["invalid"] == 1
    listed = (await keyed.client.get(url, headers=alice)).json()["data"]
    by_email = {lead["email"]: lead for lead in listed}
    assert set(by_email) == {"bo@client.test", "cy@client.test", "dd@client.test"}
    assert by_email["dd@client.test"]["data"]["First Name"] == "N1"
    assert by_email["dd@client.test"]["row_index"] == 1
    assert by_email["bo@client.test"]["data"] == {"first_name": "Bo", "email": "bo@client.test"}
    assert {lead["status"] for lead in listed} == {"pending"}
    again = await keyed.client.post(
        url, json={"leads": [{"email": "bo@client.test"}]}, headers=alice
    )
    assert again.status_code == 200  # nothing new
    assert again.json()["added"] == 0
    unmapped = await _dataset(keyed, user_id, ["ee@client.test"], mapped=False)
    no_column = await keyed.client.post(url, json={"dataset_id": unmapped}, headers=alice)
    assert_envelope(no_column, 400, "invalid_request_error", "email_column_unknown")
    wrong = await keyed.client.post(
        url, json={"dataset_id": unmapped, "email_column": "Nope"}, headers=alice
    )
    assert_envelope(wrong, 400, "invalid_request_error", "email_column_unknown")
    named = await keyed.client.post(
        url, json={"dataset_id": unmapped, "email_column": "Work Email"}, headers=alice
    )
    assert named.json()["added"] == 1
    bob_id, _ = await keyed.user()
    bobs = await _dataset(keyed, bob_id, ["ff@client.test"])
    foreign = await keyed.client.post(url, json={"dataset_id": bobs}, headers=alice)
    assert_envelope(foreign, 404, "invalid_request_error", "dataset_not_found")
    created = await keyed.client.post(
        URL, json={"name": "from ds", "dataset_id": dataset_id}, headers=alice
    )
    assert created.status_code == 201
    assert created.json()["total_leads"] == 2
    assert created.json()["dataset_id"] == dataset_id
    no_ds = await keyed.client.post(URL, json={"name": "x", "dataset_id": bobs}, headers=alice)
    assert_envelope(no_ds, 404, "invalid_request_error", "dataset_not_found")
    assert len((await keyed.client.get(URL, headers=alice)).json()["data"]) == 2


async def test_leads_added_after_launch_start_at_once(keyed: Keyed) -> None:
    _, alice = await keyed.user()
    campaign = await ready(keyed, alice)
    assert (await keyed.client.post(f"{URL}{campaign['id']}/launch", headers=alice)).is_success
    await add_leads(keyed, alice, campaign["id"], [{"email": "late@client.test"}])
    listed = await keyed.client.get(
        f"{URL}{campaign['id']}/leads", params={"status": "active"}, headers=alice
    )
    late = [lead for lead in listed.json()["data"] if lead["email"] == "late@client.test"]
    assert late[0]["due_at"] is not None


async def test_lead_list_filters_and_paginations(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    ids = await make_campaign(
        keyed.services.db,
        user_id=user_id,
        leads=[{"email": f"l{i}@client.test"} for i in range(5)],
    )
    async with write_transaction(keyed.services.db.engine) as conn:
        await conn.execute(
            update(CampaignLead)
            .where(CampaignLead.id == ids.lead_ids[0])
            .values(status="stopped", stop_reason="replied")
        )
    url = f"{URL}{ids.campaign_id}/leads"
    stopped = (await keyed.client.get(url, params={"status": "stopped"}, headers=alice)).json()
    assert [lead["id"] for lead in stopped["data"]] == [ids.lead_ids[0]]
    assert stopped["data"][0]["stop_reason"] == "replied"
    seed = await keyed.client.get(url, params={"status_filter": "pending"}, headers=alice)
    assert len(seed.json()["data"]) == 4
    first = (await keyed.client.get(url, params={"limit": 2}, headers=alice)).json()
    after = await keyed.client.get(
        url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice
    )
    offset = await keyed.client.get(url, params={"limit": 2, "offset": 2}, headers=alice)
    assert after.json()["data"] == offset.json()["data"]
    assert len({lead["id"] for lead in first["data"] + after.json()["data"]}) == 4
    bad = await keyed.client.get(url, params={"status": "gone"}, headers=alice)
    assert_envelope(bad, 400, "invalid_request_error", "parameter_invalid")


async def _waiting(keyed: Keyed, user_id: str) -> tuple[str, str]:
    """An active approval campaign with one lead waiting for its step 0 draft."""
    ids = await make_campaign(
        keyed.services.db,
        user_id=user_id,
        status="active",
        requires_approval=True,
        steps=(StepSpec(), StepSpec(delay_seconds=60)),
        leads=[{"email": "bo@client.test"}],
        lead_status="waiting_approval",
    )
    now = time.time()
    async with write_transaction(keyed.services.db.engine) as conn:
        await add_draft(conn, ids.campaign_id, ids.lead_ids[0], now)
    return ids.campaign_id, ids.lead_ids[0]


async def test_approve_unapprove_reset(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    campaign_id, lead_id = await _waiting(keyed, user_id)
    base = f"{URL}{campaign_id}"
    drafts = (await keyed.client.get(f"{base}/playground/drafts", headers=alice)).json()
    assert [(d["lead_id"], d["step_index"], d["state"]) for d in drafts["data"]] == [
        (lead_id, 0, "draft")
    ]
    assert drafts["data"][0]["email"] == "bo@client.test"
    lead_url = f"{base}/leads/{lead_id}"
    approved = await keyed.client.post(
        f"{lead_url}/approve", json={"subject": "Hi Bo"}, headers=alice
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["lead"]["status"] == "active"
    assert body["lead"]["due_at"] is not None
    assert body["drafts"][0]["state"] == "approved"
    assert body["drafts"][0]["subject"] == "Hi Bo"
    assert body["drafts"][0]["text"] == "Hello"  # not edited: kept
    waiting = (await keyed.client.get(f"{base}/playground/drafts", headers=alice)).json()
    assert waiting["data"] == []
    every = await keyed.client.get(
        f"{base}/playground/drafts", params={"state": "all"}, headers=alice
    )
    assert len(every.json()["data"]) == 1
    back = await keyed.client.post(f"{lead_url}/unapprove", json={}, headers=alice)
    assert back.json()["lead"]["status"] == "waiting_approval"
    assert back.json()["drafts"][0]["state"] == "draft"
    twice = await keyed.client.post(f"{lead_url}/unapprove", json={}, headers=alice)
    assert_envelope(twice, 409, "invalid_request_error", "not_approved")
    no_draft = await keyed.client.post(f"{lead_url}/approve", json={"step_index": 1}, headers=alice)
    assert_envelope(no_draft, 409, "invalid_request_error", "draft_not_found")
    reset = await keyed.client.post(f"{lead_url}/reset", json={}, headers=alice)
    assert reset.json()["drafts"] == []
    assert reset.json()["lead"]["status"] == "active"


async def test_a_sent_step_cannot_be_unapproved_or_reset(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    campaign_id, lead_id = await _waiting(keyed, user_id)
    lead_url = f"{URL}{campaign_id}/leads/{lead_id}"
    assert (await keyed.client.post(f"{lead_url}/approve", json={}, headers=alice)).is_success
    async with write_transaction(keyed.services.db.engine) as conn:
        await add_send(conn, campaign_id, lead_id, time.time())
    sent = await keyed.client.post(f"{lead_url}/unapprove", json={"step_index": 0}, headers=alice)
    assert_envelope(sent, 409, "invalid_request_error", "already_sent")
    kept = await keyed.client.post(f"{lead_url}/reset", json={"step_indices": [0]}, headers=alice)
    assert [d["state"] for d in kept.json()["drafts"]] == ["approved"]
    again = await keyed.client.post(f"{lead_url}/approve", json={"step_index": 0}, headers=alice)
    assert_envelope(again, 409, "invalid_request_error", "already_sent")


async def test_closed_leads_and_unknown_leads(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    campaign_id, lead_id = await _waiting(keyed, user_id)
    async with write_transaction(keyed.services.db.engine) as conn:
        await conn.execute(
            update(CampaignLead).where(CampaignLead.id == lead_id).values(status="stopped")
        )
    lead_url = f"{URL}{campaign_id}/leads/{lead_id}"
    closed = await keyed.client.post(f"{lead_url}/approve", json={}, headers=alice)
    assert_envelope(closed, 409, "invalid_request_error", "lead_closed")
    other_id, _ = await _waiting(keyed, user_id)  # a lead of another campaign of hers
    wrong = await keyed.client.post(
        f"{URL}{other_id}/leads/{lead_id}/approve", json={}, headers=alice
    )
    assert_envelope(wrong, 404, "invalid_request_error", "campaign_lead_not_found")
    bad = await keyed.client.post(f"{URL}{campaign_id}/leads/cld_x/reset", json={}, headers=alice)
    assert_envelope(bad, 404, "invalid_request_error", "campaign_lead_not_found")
    invalid = await keyed.client.post(
        f"{lead_url}/reset", json={"step_indices": [99]}, headers=alice
    )
    assert_envelope(invalid, 400, "invalid_request_error", "parameter_invalid")


async def test_campaigns_using_a_domain(keyed: Keyed) -> None:
    user_id, alice = await keyed.user()
    domain_id, alias_id = await verified_alias(keyed, alice)
    other_domain, other_alias = await verified_alias(keyed, alice, "other.test", "bo")
    db = keyed.services.db
    assert await campaigns_using_domain(db, user_id, domain_id) == []
    uses: list[dict[str, Any]] = [
        await make(keyed, alice, sender_alias_ids=[other_alias, alias_id]),
        await make(keyed, alice, sender_alias_ids=[alias_id]),
    ]
    await make(keyed, alice, sender_alias_ids=[other_alias])
    ended = await make(keyed, alice, sender_alias_ids=[alias_id])
    assert await CampaignStore(db.engine).transition(user_id, ended["id"], "cancel")
    found = await campaigns_using_domain(db.engine, user_id, domain_id)
    assert found == [c["id"] for c in uses]
    bob_id, _ = await keyed.user()
    assert await campaigns_using_domain(db, bob_id, domain_id) == []
    assert len(await campaigns_using_domain(db, user_id, other_domain)) == 2


async def test_remove_a_lead_that_has_nothing_sent(keyed: Keyed) -> None:
    """Deleted (204), with the campaign's version raised; the Idempotency-Key replays the
    204; without it a second DELETE is 404; a lead of another campaign of hers is 404."""
    _, alice = await keyed.user()
    campaign = await make(keyed, alice)
    await add_leads(
        keyed, alice, campaign["id"], [{"email": "a@client.test"}, {"email": "b@x.test"}]
    )
    leads_url = f"{URL}{campaign['id']}/leads"
    listed = (await keyed.client.get(leads_url, headers=alice)).json()["data"]
    [gone] = [lead["id"] for lead in listed if lead["email"] == "a@client.test"]
    before = (await keyed.client.get(f"{URL}{campaign['id']}", headers=alice)).json()["version"]
    headers = {**alice, "Idempotency-Key": "rm-1"}
    first = await keyed.client.delete(f"{leads_url}/{gone}", headers=headers)
    again = await keyed.client.delete(f"{leads_url}/{gone}", headers=headers)
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers.get("idempotent-replayed") == "true"
    assert [
        lead["email"] for lead in (await keyed.client.get(leads_url, headers=alice)).json()["data"]
    ] == ["b@x.test"]
    after = (await keyed.client.get(f"{URL}{campaign['id']}", headers=alice)).json()["version"]
    assert after == before + 1
    missing = await keyed.client.delete(f"{leads_url}/{gone}", headers=alice)
    assert_envelope(missing, 404, "invalid_request_error", "campaign_lead_not_found")
    other = await make(keyed, alice)
    [kept] = [
        lead["id"] for lead in (await keyed.client.get(leads_url, headers=alice)).json()["data"]
    ]
    wrong = await keyed.client.delete(f"{URL}{other['id']}/leads/{kept}", headers=alice)
    assert_envelope(wrong, 404, "invalid_request_error", "campaign_lead_not_found")
    bad = await keyed.client.delete(f"{leads_url}/cld_x", headers=alice)
    assert_envelope(bad, 404, "invalid_request_error", "campaign_lead_not_found")


async def test_remove_a_lead_with_a_sent_step(keyed: Keyed) -> None:
    """Active campaign, step 0 sent, step 1 drafted: the lead stays (its send counted), stopped
    ``removed`` with one event, the unsent draft dropped; again is a no-op 204. Paused
    campaigns allow it too; ended ones are 409 ``campaign_closed``."""
    user_id, alice = await keyed.user()
    campaign_id, lead_id = await _waiting(keyed, user_id)
    engine = keyed.services.db.engine
    now = time.time()
    async with write_transaction(engine) as conn:
        await add_send(conn, campaign_id, lead_id, now)
        await conn.execute(
            update(CampaignLead)
            .where(CampaignLead.id == lead_id)
            .values(status="active", next_position=1, due_at=now + 60)
        )
        await add_draft(conn, campaign_id, lead_id, now, 1, "Again", "Hello again")
    lead_url = f"{URL}{campaign_id}/leads/{lead_id}"
    for _ in range(2):
        assert (await keyed.client.delete(lead_url, headers=alice)).status_code == 204
    [lead] = (await keyed.client.get(f"{URL}{campaign_id}/leads", headers=alice)).json()["data"]
    assert (lead["status"], lead["stop_reason"], lead["due_at"]) == ("stopped", "removed", None)
    async with engine.connect() as conn:
        sends = (await conn.execute(select(CampaignSend.position))).scalars().all()
        drafts = (
            (
                await conn.execute(
                    select(CampaignDraft.position).where(CampaignDraft.lead_id == lead_id)
                )
            )
            .scalars()
            .all()
        )
        events = (
            (await conn.execute(select(CampaignEvent.kind).where(CampaignEvent.lead_id == lead_id)))
            .scalars()
            .all()
        )
    assert (list(sends), list(drafts), list(events)) == ([0], [0], ["removed"])

    paused = await make_campaign(
        keyed.services.db, user_id=user_id, status="paused", leads=[{"email": "p@x.test"}]
    )
    url = f"{URL}{paused.campaign_id}/leads/{paused.lead_ids[0]}"
    assert (await keyed.client.delete(url, headers=alice)).status_code == 204
    for state in ("completed", "cancelled"):
        ended = await make_campaign(
            keyed.services.db, user_id=user_id, status=state, leads=[{"email": "e@x.test"}]
        )
        url = f"{URL}{ended.campaign_id}/leads/{ended.lead_ids[0]}"
        closed = await keyed.client.delete(url, headers=alice)
        assert_envelope(closed, 409, "invalid_request_error", "campaign_closed")
