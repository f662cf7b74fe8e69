"""Revision 0017 on SQLite and PostgreSQL: down to 0016 and up again, a campaign stored before it
gets its case-folded ``name_key`` (the list search finds it) and its leads' derived columns
start empty (preflight derives them)."""

from __future__ import annotations

from alembic import command
from factory import make_campaign
from sqlalchemy import select

from server.campaigns.store import CampaignStore
from server.db.engine import Database
from server.db.migrate import alembic_config
from server.db.models import Campaign, CampaignLead


async def test_down_and_up_fills_the_name_key(db: Database) -> None:
    ids = await make_campaign(db, name="Große Straße", leads=[{"email": "a@x.test"}])
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0016"))
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))
    async with db.engine.connect() as conn:
        key = (await conn.execute(select(Campaign.name_key))).scalar_one()
        lead = (await conn.execute(select(CampaignLead.verdict, CampaignLead.var_index))).one()
    assert key == "grosse strasse"
    assert tuple(lead) == (None, None)
    found = await CampaignStore(db.engine).list(ids.user_id, status=None, search="STRASSE", limit=5)
    assert [c.id for c in found] == [ids.campaign_id]
