"""The worker's overlapped hand-off, against a real SMTP server (our inbound endpoint on
loopback as the relay), on SQLite and PostgreSQL: when the hand-off commit fails, or applies to
nothing because the message was cancelled meanwhile, the envelope opened beside it is reset and
no DATA goes; the message is sent once on the next pass (or never, when cancelled)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from inbound_helpers import make_users, running_endpoint
from mail_support import identities

from server.db.engine import Database
from server.mail.message import Draft
from server.mail.outbox import Outbox, Outcome
from server.mail.relay import Relay, RelayConfig
from server.mail.service import MailService
from server.mail.worker import MailWorker


class FailingOnce(Outbox):
    """An outbox whose first hand-off commit fails (the database went away)."""

    failed = False

    async def advance_for(
        self, now: float, requests: Sequence[tuple[str, Sequence[Outcome], Sequence[str]]]
    ) -> list[dict[str, str]]:
        if not self.failed and any(hand_off for _, _, hand_off in requests):
            self.failed = True
            raise OSError("database away")
        return await super().advance_for(now, requests)


class CancelledMeanwhile(Outbox):
    """An outbox where the owner cancels each message just before its hand-off commits."""

    owner = ""

    async def advance_for(
        self, now: float, requests: Sequence[tuple[str, Sequence[Outcome], Sequence[str]]]
    ) -> list[dict[str, str]]:
        for _, _, hand_off in requests:
            for email_id in hand_off:
                await self.cancel(self.owner, email_id, now)
        return await super().advance_for(now, requests)


async def _queue(outbox: Outbox, user: str) -> str:
    mail = MailService(outbox, identity=identities({"acme.test"}))
    record = await mail.submit(
        user, Draft(from_="ann@acme.test", to=["bob@inbox.test"], subject="Hi", text="Hi\n")
    )
    return record.id


async def test_a_failed_hand_off_commit_sends_nothing_then_once(
    db: Database, tmp_path: Path
) -> None:
    (bob,) = await make_users(db, "bob")
    outbox = FailingOnce(db)
    email_id = await _queue(outbox, bob)
    async with running_endpoint(db, tmp_path, {"inbox.test": bob}) as ep:
        relay = Relay(RelayConfig(host="127.0.0.1", port=ep.port, starttls=False))
        worker = MailWorker(outbox, lambda: relay, lease_seconds=0.05)
        worker.group_commit = True  # through the group commit on both backends
        try:
            try:
                await worker.run_once(relay, "slot-a")
            except OSError:
                pass
            else:
                raise AssertionError("the failed commit did not surface")
            assert outbox.failed
            assert await ep.store.list_inbound(bob, after=None, offset=0, limit=5) == []
            # The lease lapses; another pass (a new slot id, as after an error) sends it once.
            deadline = time.monotonic() + 30
            while (await outbox.count_by_state()).get("sent", 0) < 1:
                assert time.monotonic() < deadline, await outbox.count_by_state()
                await worker.run_once(relay, "slot-b")
        finally:
            await relay.close()
        assert len(await ep.store.list_inbound(bob, after=None, offset=0, limit=5)) == 1
        record = await outbox.get(bob, email_id)
        assert record is not None
        assert record.attempts == 1


async def test_a_cancel_during_the_hand_off_sends_nothing(db: Database, tmp_path: Path) -> None:
    (bob,) = await make_users(db, "bob")
    outbox = CancelledMeanwhile(db)
    outbox.owner = bob
    email_id = await _queue(outbox, bob)
    async with running_endpoint(db, tmp_path, {"inbox.test": bob}) as ep:
        relay = Relay(RelayConfig(host="127.0.0.1", port=ep.port, starttls=False))
        worker = MailWorker(outbox, lambda: relay)
        try:
            assert await worker.run_once(relay, "slot-a") == 0
            assert (
                await relay.send("a@acme.test", ["bob@inbox.test"], b"Subject: x\r\n\r\nx\r\n")
            ).code == 250  # the connection was reset, not left mid-transaction
        finally:
            await relay.close()
        record = await outbox.get(bob, email_id)
        assert record is not None
        assert record.state.value == "cancelled"
        inbound = await ep.store.list_inbound(bob, after=None, offset=0, limit=5)
        assert [row.subject for row in inbound] == ["x"]  # only the probe message arrived
