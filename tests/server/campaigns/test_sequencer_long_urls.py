"""Campaign messages under the longest public URL the settings accept: the unsubscribe link in
List-Unsubscribe (and the thread's In-Reply-To/References) goes out plain ASCII and exact, no
encoded word, lines in bounds, DKIM verifying; the same link is in the body."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import dkim
import sqlalchemy as sa
from factory import StepSpec, make_user
from header_support import assert_line_lengths, header_block, raw_value
from mail_support import dkim_dns
from sequencer_support import KEY, Clock, launched, sequencer

from server.campaigns.unsubscribe import read_unsubscribe_token
from server.db.engine import Database
from server.db.models import CampaignSend, MailMessage
from server.settings import PUBLIC_URL_MAX, load_settings

LONG_BASE = "https://bavlio.example.com/" + "p" * (
    PUBLIC_URL_MAX - len("https://bavlio.example.com/")
)
STEPS = (
    StepSpec(0, ({"label": "A", "weight": 1, "subject": "Hi", "html": "<p>Hello</p>"},)),
    StepSpec(86400, ({"label": "A", "weight": 1, "subject": "Again", "text": "Two"},)),
)


async def test_long_public_url_unsubscribe_header_is_plain_exact_and_signed(
    db: Database,
) -> None:
    assert load_settings(env_file=None, public_url=LONG_BASE).public_url == LONG_BASE
    clock = Clock()
    user = await make_user(db)
    await launched(
        db, clock, user, steps=STEPS, leads=[{"email": "lead@dest.test", "name": "Lead"}]
    )
    seq = sequencer(db, clock)
    seq.base_url = LONG_BASE
    assert (await seq.tick()).queued == 1
    clock.advance(86400)
    assert (await seq.tick()).queued == 1
    async with db.engine.connect() as conn:
        sends = (await conn.execute(sa.select(CampaignSend))).mappings().all()
        messages: dict[str, Any] = {
            m["id"]: m for m in (await conn.execute(sa.select(MailMessage))).mappings().all()
        }
    chain = [messages[s["email_id"]] for s in sorted(sends, key=lambda s: s["position"])]
    assert len(chain) == 2
    for k, row in enumerate(chain):
        raw = bytes(row["raw"])
        assert b"=?" not in header_block(raw)
        assert_line_lengths(raw)
        assert dkim.verify(raw, dnsfunc=dkim_dns)
        url = raw_value(raw, "List-Unsubscribe").decode().removeprefix("<").removesuffix(">")
        assert url.startswith(f"{LONG_BASE}/u/")
        assert read_unsubscribe_token(KEY, url.rsplit("/", 1)[1]) == sends[0]["lead_id"]
        msg = message_from_bytes(raw, policy=policy.default)
        assert msg["List-Unsubscribe"] == f"<{url}>"
        body = msg.get_body(("plain", "html"))
        assert body is not None
        assert url in body.get_content()
        if k:
            first = chain[0]["message_id"]
            assert raw_value(raw, "In-Reply-To") == raw_value(raw, "References") == first.encode()
