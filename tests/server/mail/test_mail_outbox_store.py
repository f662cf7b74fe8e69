"""The outbox store on SQLite and PostgreSQL: claim, hand-off, outcomes, cancel races, lost
leases, recovery and the attempt-token guard."""

from __future__ import annotations

import asyncio

import pytest
from mail_support import CountTogether, identities, suppressing

from server.db.engine import Database
from server.mail.message import Draft
from server.mail.outbox import Outbox, Outcome
from server.mail.outbox_rules import DailyCaps, Event, State
from server.mail.service import CapReached, MailService


def service(db: Database, clock: list[float], **kw: object) -> MailService:
    return MailService(
        Outbox(db),
        identity=identities({"acme.test"}),
        clock=lambda: clock[0],
        **kw,  # type: ignore[arg-type]
    )


def draft(to: str = "john.smith@company.test", **kw: object) -> Draft:
    return Draft(from_="ann@acme.test", to=[to], subject="Hi", text="Hello", **kw)  # type: ignore[arg-type]


async def test_claim_hand_off_accept(db: Database) -> None:
    clock = [1000.0]
    mail = service(db, clock)
    one = await mail.submit("usr_a", draft())
    two = await mail.submit("usr_a", draft())
    box = mail.outbox
    claimed = await box.claim("w1", 1000.0, 60, 10)
    assert [c.id for c in claimed] == sorted([one.id, two.id])
    assert await box.claim("w2", 1000.0, 60, 10) == []  # leased
    token = await box.advance("w1", 1001.0, None, one.id)
    assert token is not None
    got = await box.get("usr_a", one.id)
    assert got is not None
    assert got.state is State.SENDING
    assert got.attempts == 1
    done = Outcome(one.id, token, Event.ACCEPTED, queue_id="4Xq", reply="250 queued as 4Xq")
    token2 = await box.advance("w1", 1002.0, done, two.id)
    assert token2 is not None
    got = await box.get("usr_a", one.id)
    assert got is not None
    assert got.state is State.SENT
    assert got.relay_queue_id == "4Xq"
    assert await box.finish("w1", 1003.0, Outcome(two.id, token2, Event.ACCEPTED, queue_id="5"))
    assert await box.count_by_state() == {"sent": 2}


async def test_an_outcome_needs_the_current_token_and_lease(db: Database) -> None:
    mail = service(db, [1000.0])
    rec = await mail.submit("usr_a", draft())
    box = mail.outbox
    await box.claim("w1", 1000.0, 60, 1)
    token = await box.advance("w1", 1000.0, None, rec.id)
    assert token is not None
    assert not await box.finish("w1", 1001.0, Outcome(rec.id, "wrong", Event.ACCEPTED))
    assert not await box.finish("w2", 1001.0, Outcome(rec.id, token, Event.ACCEPTED))
    assert await box.finish("w1", 1001.0, Outcome(rec.id, token, Event.ACCEPTED))
    assert not await box.finish("w1", 1002.0, Outcome(rec.id, token, Event.FAIL))  # terminal


async def test_cancel_wins_over_a_later_hand_off_and_409_after(db: Database) -> None:
    mail = service(db, [1000.0])
    rec = await mail.submit("usr_a", draft())
    other = await mail.submit("usr_a", draft())
    box = mail.outbox
    await box.claim("w1", 1000.0, 60, 10)
    cancelled = await box.cancel("usr_a", rec.id, 1000.5)
    assert cancelled is not None
    assert cancelled.state is State.CANCELLED
    assert await box.advance("w1", 1001.0, None, rec.id) is None  # never handed off
    assert await box.advance("w1", 1001.0, None, other.id) is not None
    assert await box.cancel("usr_a", other.id, 1002.0) is None  # sending: too late
    assert await box.cancel("usr_b", rec.id, 1002.0) is None  # not the owner


async def test_defer_waits_and_an_expired_lease_is_claimed_again(db: Database) -> None:
    mail = service(db, [1000.0])
    rec = await mail.submit("usr_a", draft())
    box = mail.outbox
    await box.claim("w1", 1000.0, 60, 1)
    token = await box.advance("w1", 1000.0, None, rec.id)
    assert token is not None
    await box.finish("w1", 1000.0, Outcome(rec.id, token, Event.DEFER, retry_at=1100.0))
    assert await box.claim("w2", 1050.0, 60, 1) == []
    again = await box.claim("w2", 1100.0, 60, 1)
    assert [c.attempts for c in again] == [1]
    # w2 dies holding it (queued, leased): after the lease w3 takes it
    assert await box.claim("w3", 1150.0, 60, 1) == []
    assert [c.id for c in await box.claim("w3", 1161.0, 60, 1)] == [rec.id]
    assert await box.advance("w2", 1162.0, None, rec.id) is None  # w2's lease moved on


async def test_recover_takes_over_sending_messages_after_their_lease(db: Database) -> None:
    mail = service(db, [1000.0])
    rec = await mail.submit("usr_a", draft())
    box = mail.outbox
    await box.claim("w1", 1000.0, 60, 1)
    token = await box.advance("w1", 1000.0, None, rec.id)
    assert await box.recover("w2", 1030.0, 60, 10) == []
    assert await box.recover("w1", 1061.0, 60, 10) == []  # never its own in-flight message
    found = await box.recover("w2", 1061.0, 60, 10)
    assert [(c.id, c.attempt_token) for c in found] == [(rec.id, token)]
    assert not await box.finish("w1", 1062.0, Outcome(rec.id, token or "", Event.ACCEPTED))
    assert await box.finish("w2", 1062.0, Outcome(rec.id, token or "", Event.REQUEUE))
    got = await box.get("usr_a", rec.id)
    assert got is not None
    assert got.state is State.QUEUED


async def test_scheduled_messages_wait_and_lists_filter(db: Database) -> None:
    clock = [1000.0]
    mail = service(db, clock)
    later = await mail.submit("usr_a", draft(tags=["q4"]), scheduled_at=5000.0)
    now = await mail.submit("usr_a", draft(tags=["intro"]))
    box = mail.outbox
    assert [c.id for c in await box.claim("w1", 1000.0, 60, 10)] == [now.id]
    assert await box.claim("w1", 1001.0, 60, 10) == []
    assert later.id in [c.id for c in await box.claim("w1", 5000.0, 60, 10)]
    tagged = await box.list_emails("usr_a", limit=10, tag="q4")
    assert [r.id for r in tagged] == [later.id]
    assert await box.list_emails("usr_a", limit=10, tag="q") == []
    assert await box.list_emails("usr_b", limit=10) == []
    queued = await box.list_emails("usr_a", limit=10, state=State.QUEUED)
    assert {r.id for r in queued} == {later.id, now.id}


async def test_suppressed_recipients_are_left_out_and_shown(db: Database) -> None:
    mail = service(db, [1000.0], suppression=suppressing({"bad@company.test": "hard_bounce"}))
    some = await mail.submit(
        "usr_a",
        Draft(
            from_="ann@acme.test", to=["bad@company.test", "ok@company.test"], subject="s", text="t"
        ),
    )
    assert some.state is State.QUEUED
    assert some.recipients == ["ok@company.test"]
    assert some.suppressed == [{"address": "bad@company.test", "reason": "hard_bounce"}]
    none = await mail.submit("usr_a", draft(to="bad@company.test"))
    assert none.state is State.FAILED
    assert none.error_code == "all_recipients_suppressed"
    assert [c.id for c in await mail.outbox.claim("w", 1000.0, 60, 10)] == [some.id]


async def test_daily_caps_per_domain_and_alias(db: Database) -> None:
    clock = [86400.0 * 10 + 5]
    mail = service(db, clock, caps=DailyCaps(per_domain=3, per_alias=2))
    await mail.submit("usr_a", draft())
    await mail.submit("usr_a", draft())
    with pytest.raises(CapReached) as caught:
        await mail.submit("usr_a", draft())
    assert caught.value.which == "alias"
    other = Draft(from_="bob@acme.test", to=["x@company.test"], subject="s", text="t")
    await mail.submit("usr_a", other)
    with pytest.raises(CapReached, match="domain"):
        await mail.submit("usr_a", other)
    clock[0] += 86400  # a new UTC day
    await mail.submit("usr_a", draft())


@pytest.mark.parametrize(
    ("caps", "which", "senders"),
    [
        (DailyCaps(per_alias=3), "alias", ["ann@acme.test"] * 4),
        (DailyCaps(per_domain=3), "domain", ["ann@acme.test", "bob@acme.test", "cy@acme.test"] * 2),
    ],
)
async def test_senders_racing_at_cap_minus_one_queue_exactly_one(
    db: Database, caps: DailyCaps, which: str, senders: list[str]
) -> None:
    clock = [86400.0 * 10 + 5]
    plain = service(db, clock, caps=caps)
    for _ in range(2):  # cap - 1 sent
        await plain.submit("usr_a", draft())
    racing = MailService(
        CountTogether(db, len(senders)),
        identity=identities({"acme.test"}),
        clock=lambda: clock[0],
        caps=caps,
    )
    racers = [
        racing.submit("usr_a", Draft(from_=s, to=["x@company.test"], subject="s", text="t"))
        for s in senders
    ]
    results = await asyncio.gather(*racers, return_exceptions=True)
    refused = [r for r in results if isinstance(r, CapReached)]
    assert len(refused) == len(senders) - 1, results
    assert {r.which for r in refused} == {which}
    domain, alias = await plain.outbox.counts_since("acme.test", "ann@acme.test", 86400.0 * 10)
    assert (domain if which == "domain" else alias) == 3


async def test_an_insert_past_the_cap_writes_nothing_and_a_cancel_frees_a_slot(
    db: Database,
) -> None:
    clock = [86400.0 * 10 + 5]
    caps = DailyCaps(per_alias=1)
    mail = service(db, clock, caps=caps)
    late = await mail.prepare("usr_a", draft())  # counted before the first one below is in
    first = await mail.submit("usr_a", draft())
    with pytest.raises(CapReached, match="alias"):
        await mail.outbox.insert(late.row, late.links, caps=caps)
    assert await mail.outbox.get("usr_a", str(late.row["id"])) is None
    await mail.outbox.cancel("usr_a", first.id, clock[0])  # a cancelled message does not count
    assert (await mail.outbox.insert(late.row, late.links, caps=caps)).id == late.row["id"]
