"""Deleting a sending domain is refused (409 naming the campaign) while a draft, active or
paused campaign sends from one of its aliases, on SQLite and PostgreSQL; campaigns on other
domains, finished campaigns and another user's campaigns do not hold it; the registry of
in-use checks registers each check once and removes it again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import sqlalchemy as sa
from campaigns.factory import make_campaign
from keyed_helpers import Keyed, keyed_app, keyed_settings
from tests_server_helpers import assert_envelope

from server.db.models import Campaign
from server.mail import store as mail_store
from server.settings import Settings

BASE = "/api/v1/bavimail"
MAIL = {"mail_public_relay_host": "relay.bavlio.test", "mail_relay_ips": ["192.0.2.10"]}


@pytest_asyncio.fixture(loop_scope="function")
async def mail(backend_settings: Settings, tmp_path: Path) -> AsyncIterator[Keyed]:
    """The keyed app with mail settings (no DNS: domains are marked verified in the store)."""
    settings = keyed_settings(backend_settings, tmp_path, embedded_worker=False, **MAIL)
    async with keyed_app(settings) as running:
        yield running


async def _domain_with_alias(
    keyed: Keyed, user_id: str, headers: dict[str, str], name: str
) -> tuple[str, str]:
    made = await keyed.client.post(f"{BASE}/domains", json={"name": name}, headers=headers)
    assert made.status_code == 201, made.text
    domain_id: str = made.json()["id"]
    await keyed.services.mail.record_check(user_id, domain_id, [], "verified", pending_ok=False)
    alias = await keyed.client.post(
        f"{BASE}/aliases", json={"domain_id": domain_id, "local_part": "ann"}, headers=headers
    )
    assert alias.status_code == 201, alias.text
    alias_id: str = alias.json()["id"]
    return domain_id, alias_id


async def test_delete_refused_while_a_campaign_sends_from_the_domain(mail: Keyed) -> None:
    user_id, session = await mail.user()
    headers = await mail.key(session, ["bavimail:write"])
    domain_id, alias_id = await _domain_with_alias(mail, user_id, headers, "busy.test")
    other_domain, other_alias = await _domain_with_alias(mail, user_id, headers, "other.test")
    db: Any = mail.services.db
    active = await make_campaign(
        db, user_id=user_id, name="Q4 outreach", status="active", sender_alias_ids=[alias_id]
    )
    # Neither of these holds busy.test: a finished campaign, and one on another domain.
    await make_campaign(db, user_id=user_id, status="completed", sender_alias_ids=[alias_id])
    await make_campaign(db, user_id=user_id, status="active", sender_alias_ids=[other_alias])

    refused = await mail.client.delete(f"{BASE}/domains/{domain_id}", headers=headers)
    error = assert_envelope(refused, 409, "invalid_request_error", "domain_in_use")
    assert active.campaign_id in error["message"]
    assert "Q4 outreach" in error["message"]
    still = await mail.client.get(f"{BASE}/domains/{domain_id}", headers=headers)
    assert still.status_code == 200
    aliases = await mail.client.get(f"{BASE}/aliases/{alias_id}", headers=headers)
    assert aliases.status_code == 200  # the refused delete removed nothing

    # Paused and draft campaigns hold it too; once cancelled, nothing does.
    for status in ("paused", "draft", "cancelled"):
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.update(Campaign.__table__)
                .where(Campaign.__table__.c.id == active.campaign_id)
                .values(status=status)
            )
        answer = await mail.client.delete(f"{BASE}/domains/{domain_id}", headers=headers)
        if status == "cancelled":
            assert answer.status_code == 200, answer.text
        else:
            assert_envelope(answer, 409, "invalid_request_error", "domain_in_use")

    # other.test is still held by its own active campaign.
    held = await mail.client.delete(f"{BASE}/domains/{other_domain}", headers=headers)
    assert_envelope(held, 409, "invalid_request_error", "domain_in_use")


async def test_another_users_campaign_never_holds_a_domain(mail: Keyed) -> None:
    user_id, session = await mail.user()
    headers = await mail.key(session, ["bavimail:write"])
    domain_id, alias_id = await _domain_with_alias(mail, user_id, headers, "mine.test")
    stranger, _ = await mail.user()
    # A stranger's campaign naming our alias id (it cannot send from it) holds nothing.
    await make_campaign(
        mail.services.db, user_id=stranger, status="active", sender_alias_ids=[alias_id]
    )
    answer = await mail.client.delete(f"{BASE}/domains/{domain_id}", headers=headers)
    assert answer.status_code == 200, answer.text


async def test_many_campaigns_are_counted_and_checks_register_once(mail: Keyed) -> None:
    user_id, session = await mail.user()
    headers = await mail.key(session, ["bavimail:write"])
    domain_id, alias_id = await _domain_with_alias(mail, user_id, headers, "crowd.test")
    for i in range(7):
        await make_campaign(
            mail.services.db,
            user_id=user_id,
            name=f"c{i}",
            status="active",
            sender_alias_ids=["als_elsewhere", alias_id],
        )

    async def busy(_conn: Any, _user: str, wanted: str) -> list[str]:
        return ["an export runs from it"] if wanted == domain_id else []

    remove = mail_store.register_in_use_check(busy)
    again = mail_store.register_in_use_check(busy)
    try:
        assert mail_store.IN_USE_CHECKS.count(busy) == 1
        refused = await mail.client.delete(f"{BASE}/domains/{domain_id}", headers=headers)
    finally:
        remove()
    again()  # removing twice is harmless
    assert busy not in mail_store.IN_USE_CHECKS
    message = assert_envelope(refused, 409, "invalid_request_error", "domain_in_use")["message"]
    assert "campaigns " in message
    assert "and 2 more" in message
    assert "an export runs from it" in message
