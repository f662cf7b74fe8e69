"""The campaign stores on SQLite and PostgreSQL, below the routes: launch's effect on leads with
an injected clock, stale versions, transitions and adds on campaigns that are gone."""

from __future__ import annotations

import asyncio

import pytest
from factory import make_campaign, make_user

from server.campaigns import rules
from server.campaigns.lead_store import LeadStore, NewLead
from server.campaigns.store import CampaignStore, Refused, StaleVersion
from server.db.engine import Database


async def test_launch_starts_pending_leads_only(db: Database) -> None:
    ids = await make_campaign(db, leads=[{"email": "a@x.test"}, {"email": "b@x.test"}])
    leads = LeadStore(db.engine)
    stopped = await make_campaign(db, user_id=ids.user_id, leads=[{"email": "c@x.test"}])
    store = CampaignStore(db.engine)
    done = await store.transition(ids.user_id, ids.campaign_id, "launch", now=1000.0)
    assert done is not None
    campaign, changed = done
    assert changed
    assert (campaign.status, campaign.launched_at, campaign.version) == ("active", 1000.0, 2)
    started = await leads.all(ids.campaign_id, statuses=["active"])
    assert [(lead.due_at, lead.next_position) for lead in started] == [(1000.0, 0)] * 2
    untouched = await leads.all(stopped.campaign_id, statuses=["pending"])
    assert len(untouched) == 1
    with pytest.raises(Refused):
        await store.transition(ids.user_id, ids.campaign_id, "launch")
    assert await store.transition("usr_other", ids.campaign_id, "pause") is None


async def test_stale_versions_and_vanished_campaigns(db: Database) -> None:
    ids = await make_campaign(db)
    store = CampaignStore(db.engine)
    everywhere = frozenset({"draft", "active", "paused", "completed", "cancelled"})
    updated = await store.update(
        ids.user_id,
        ids.campaign_id,
        version=1,
        values={"name": "x"},
        steps=None,
        allowed_in=everywhere,
    )
    assert updated is not None
    assert updated.version == 2
    with pytest.raises(StaleVersion) as stale:
        await store.update(
            ids.user_id,
            ids.campaign_id,
            version=1,
            values={"name": "y"},
            steps=None,
            allowed_in=everywhere,
        )
    assert stale.value.current == 2
    with pytest.raises(StaleVersion):  # right version, but a state the fields are frozen in
        await store.update(
            ids.user_id,
            ids.campaign_id,
            version=2,
            values={"name": "y"},
            steps=None,
            allowed_in=frozenset({"active"}),
        )
    assert await store.delete(ids.user_id, ids.campaign_id) is True
    assert await store.delete(ids.user_id, ids.campaign_id) is None
    assert (
        await store.update(
            ids.user_id, ids.campaign_id, version=2, values={}, steps=None, allowed_in=everywhere
        )
        is None
    )
    with pytest.raises(LookupError):
        await LeadStore(db.engine).add(ids.user_id, ids.campaign_id, [NewLead("a@x.test", {})])
    other = await make_user(db)
    assert await store.get(other, ids.campaign_id) is None


async def test_the_store_follows_the_rules_table_in_every_state(db: Database) -> None:
    store = CampaignStore(db.engine)
    user_id = await make_user(db)
    for state in rules.STATES:
        for action in rules.ACTIONS:
            ids = await make_campaign(db, user_id=user_id, status=state)
            expected = rules.apply(state, action)
            if expected is None:
                with pytest.raises(Refused):
                    await store.transition(user_id, ids.campaign_id, action)
                continue
            done = await store.transition(user_id, ids.campaign_id, action)
            assert done is not None
            campaign, changed = done
            assert (campaign.status, changed) == (expected.state, expected.changed), (state, action)
            assert campaign.version == (2 if changed else 1)
            assert (campaign.finished_at is not None) == (
                changed and expected.state in rules.TERMINAL
            )


async def test_racing_launches_start_the_campaign_once(db: Database) -> None:
    ids = await make_campaign(db, leads=[{"email": "a@x.test"}])
    store = CampaignStore(db.engine)
    results = await asyncio.gather(
        *(store.transition(ids.user_id, ids.campaign_id, "launch") for _ in range(4)),
        return_exceptions=True,
    )
    launched = [r for r in results if isinstance(r, tuple)]
    assert len(launched) == 1
    assert all(isinstance(r, Refused) for r in results if not isinstance(r, tuple))
    final = await store.get(ids.user_id, ids.campaign_id)
    assert final is not None
    assert final.version == 2


async def test_a_launch_checked_at_one_version_never_launches_another(db: Database) -> None:
    """Launch passes the version its checks ran on: a PATCH in between (steps, senders) makes
    it a StaleVersion and the campaign stays a draft, its leads pending."""
    ids = await make_campaign(db, leads=[{"email": "a@x.test"}])
    store = CampaignStore(db.engine)
    checked = await store.get(ids.user_id, ids.campaign_id)
    assert checked is not None
    everywhere = frozenset({"draft"})
    await store.update(
        ids.user_id,
        ids.campaign_id,
        version=checked.version,
        values={"sender_alias_ids": []},
        steps=None,
        allowed_in=everywhere,
    )
    with pytest.raises(StaleVersion) as stale:
        await store.transition(ids.user_id, ids.campaign_id, "launch", version=checked.version)
    assert stale.value.current == checked.version + 1
    after = await store.get(ids.user_id, ids.campaign_id)
    assert after is not None
    assert after.status == "draft"
    assert len(await LeadStore(db.engine).all(ids.campaign_id, statuses=["pending"])) == 1
    done = await store.transition(ids.user_id, ids.campaign_id, "launch", version=after.version)
    assert done is not None
    assert done[0].status == "active"
