"""The inbound SMTP endpoint over real SMTP on loopback (aiosmtplib), on SQLite and PostgreSQL:
accepted mail is stored raw and parsed, refused recipients and oversized data get their SMTP
codes, storage failures are temporary, DSNs to the bounce address reach suppression."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest
from inbound_helpers import FixedOutbound, dsn, make_users, message, running_endpoint

from server.db.engine import Database
from server.mail.inbound_ports import SentMessage
from server.mail.inbound_smtp import InboundConfig, InboundHandler, Route, split_address


def _eml_files(root: Path) -> list[Path]:
    return list(root.rglob("*.eml"))


async def _client(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    await client.connect()
    await client.ehlo()
    return client


async def test_a_message_is_stored_raw_and_parsed(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    raw = message(attachment=b"%PDF-1.4 offer")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        client = await _client(ep.port)
        errors, reply = await client.sendmail("bob@client.test", ["Ann@ACME.test"], raw)
        await client.quit()
        assert errors == {}
        assert reply.startswith("2.0.0")
        (row,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        assert row.subject == "Hello"
        assert row.from_address == "bob@client.test"
        assert row.mail_from == "bob@client.test"
        assert row.rcpt_to == ["ann@acme.test"]
        assert row.text == "Hi Ann\n"
        assert row.attachments[0]["filename"] == "offer.pdf"
        assert row.attachments[0]["size"] == len(b"%PDF-1.4 offer")
        assert row.conversation_id is not None
        assert row.auto_reply is None
        stored = await ep.raw.get(row.raw_key)
        assert stored == raw.replace(b"\n", b"\r\n")


async def test_hostile_bytes_are_stored_safely(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    raw = (
        b"From: =?x-bogus?q?\x00?= <b\x00ob@c.test>, \xff\xfe@d.test\r\n"
        b"X-Junk: \x00\x01\x7f\xff\r\nSubject: caf\xe9 \x00\r\n"
        b"Message-ID: <\x00bad@x> <ok@x>\r\nIn-Reply-To: <\xff@x>\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>\x00\xff\xfe</p>\r\n"
    )
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        reply = await ep.handler.deliver("b\x00@c.test", [Route("ann@acme.test", ann)], raw)
        assert reply.startswith("250"), reply
        (row,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        assert row.html == "<p>\ufffd\ufffd</p>\n"
        assert row.mail_from == "b@c.test"
        assert row.message_id == "ok@x"
        assert row.in_reply_to == ["?@x"]  # undecodable bytes replaced, storable
        assert row.from_address is None


async def test_refused_recipients_get_their_codes(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    config = InboundConfig(max_recipients=2, bounce_domains=frozenset({"rp.acme.test"}))
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=config) as ep:
        client = await _client(ep.port)
        await client.mail("bob@client.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as relay:
            await client.rcpt("someone@gmail.test")
        assert relay.value.code == 550
        assert relay.value.message.startswith("5.7.1")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as syntax:
            await client.rcpt("no-at-sign")
        assert syntax.value.code in (550, 553)
        await client.rcpt("ann@acme.test")
        await client.rcpt("sales@acme.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as many:
            await client.rcpt("info@acme.test")
        assert many.value.code == 452
        await client.quit()


async def test_oversized_messages_are_refused_552(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    config = InboundConfig(max_bytes=4096)
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=config) as ep:
        client = await _client(ep.port)
        with pytest.raises(aiosmtplib.SMTPResponseException) as data:
            await client.sendmail("bob@client.test", ["ann@acme.test"], message(body="x" * 8000))
        assert data.value.code == 552
        await client.quit()
        client = await _client(ep.port)
        with pytest.raises(aiosmtplib.SMTPResponseException) as announced:
            await client.mail("bob@client.test", options=["SIZE=999999"])
        assert announced.value.code == 552
        await client.quit()
        assert await ep.store.list_inbound(ann, after=None, offset=0, limit=10) == []
        assert not _eml_files(tmp_path)


async def test_an_unparseable_message_is_refused_550(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    headers = b"".join(b"X-Many-%d: v\r\n" % i for i in range(500))
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        client = await _client(ep.port)
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await client.sendmail("bob@client.test", ["ann@acme.test"], headers + b"\r\nbody\r\n")
        assert refused.value.code == 550
        assert refused.value.message.startswith("5.6.0")
        await client.quit()


class _BrokenRaw:
    async def put(self, key: str, data: bytes) -> None:
        raise OSError("disk full")

    async def get(self, key: str) -> bytes | None:
        return None

    async def delete(self, key: str) -> None:
        return None


class _BrokenRouting:
    async def owner(self, domain: str) -> str | None:
        raise ConnectionError("database down")


async def test_storage_and_routing_failures_are_temporary(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        ep.handler.raw = _BrokenRaw()
        client = await _client(ep.port)
        with pytest.raises(aiosmtplib.SMTPResponseException) as stored:
            await client.sendmail("bob@client.test", ["ann@acme.test"], message())
        assert stored.value.code == 451
        await client.quit()
        ep.handler.routing = _BrokenRouting()
        client = await _client(ep.port)
        await client.mail("bob@client.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as routed:
            await client.rcpt("ann@acme.test")
        assert routed.value.code == 451
        await client.quit()
        assert await ep.store.list_inbound(ann, after=None, offset=0, limit=10) == []


async def test_a_failed_record_removes_the_raw_file(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        route = Route("ann@acme.test", "no-such-user")  # violates the users foreign key
        reply = await ep.handler.deliver("bob@client.test", [route], message())
        assert reply.startswith("451")
        assert not _eml_files(tmp_path)


async def test_each_owner_gets_its_own_copy(db: Database, tmp_path: Path) -> None:
    ann, bob = await make_users(db, "ann", "bob")
    async with running_endpoint(db, tmp_path, {"acme.test": ann, "bob.test": bob}) as ep:
        client = await _client(ep.port)
        await client.sendmail("c@client.test", ["ann@acme.test", "x@bob.test"], message())
        await client.quit()
        (mine,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        (theirs,) = await ep.store.list_inbound(bob, after=None, offset=0, limit=10)
        assert mine.id != theirs.id
        assert mine.raw_key != theirs.raw_key
        assert theirs.rcpt_to == ["x@bob.test"]
        assert mine.conversation_id != theirs.conversation_id


async def test_replies_thread_with_sent_mail(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        conv = await ep.store.link_outbound(
            ann, sent_message_id="msg_1", message_id="sent1@acme.test", subject="Offer"
        )
        first = message(message_id="<r1@client.test>", in_reply_to="<sent1@acme.test>")
        second = message(message_id="<r2@client.test>", in_reply_to="<r1@client.test>")
        assert (await ep.handler.deliver("b@c.test", [Route("ann@acme.test", ann)], first))[
            0
        ] == "2"
        assert (await ep.handler.deliver("b@c.test", [Route("ann@acme.test", ann)], second))[
            0
        ] == "2"
        rows = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        assert {r.conversation_id for r in rows} == {conv}
        found = await ep.store.conversation(ann, conv)
        assert found is not None
        conversation, messages, inbound = found
        assert conversation.message_count == 3
        assert conversation.inbound_count == 2
        assert [m.source for m in messages] == ["outbound", "inbound", "inbound"]
        assert len(inbound) == 2


async def test_replies_to_mail_the_outbox_knows_thread_too(db: Database, tmp_path: Path) -> None:
    ann, bob = await make_users(db, "ann", "bob")
    outbound = FixedOutbound({"sent9@acme.test": SentMessage("msg_9", ann)})
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, outbound=outbound) as ep:
        reply = message(in_reply_to="<sent9@acme.test>")
        await ep.handler.deliver("b@c.test", [Route("ann@acme.test", ann)], reply)
        (row,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        found = await ep.store.conversation(ann, row.conversation_id or "")
        assert found is not None
        assert (found[1][0].source, found[1][0].ref_id) == ("outbound", "msg_9")
        # another user's sent message never links into this user's thread
        await ep.handler.deliver("b@c.test", [Route("bob@acme.test", bob)], reply)
        (other,) = await ep.store.list_inbound(bob, after=None, offset=0, limit=10)
        found = await ep.store.conversation(bob, other.conversation_id or "")
        assert found is not None
        assert [m.source for m in found[1]] == ["inbound"]


async def test_dsn_to_the_bounce_address(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        await ep.store.link_outbound(ann, sent_message_id="msg_7", message_id="out7@acme.test")
        report = dsn(
            "out7@acme.test",
            [
                ("gone@far.test", "failed", "5.1.1"),
                ("full@far.test", "delayed", "4.2.2"),
                ("strict@far.test", "failed", "5.7.1"),
            ],
        )
        client = await _client(ep.port)
        await client.sendmail("", ["bounces+msg_7@rp.acme.test"], report)
        await client.quit()
        assert ep.suppression.entries == [(ann, "gone@far.test", "5.1.1", "msg_7")]
        (row,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        assert row.kind == "dsn"
        assert row.conversation_id is None
        assert row.auto_reply == "auto_replied"
        bounces = await ep.store.bounces_of("msg_7")
        assert sorted((b["recipient"], b["kind"]) for b in bounces) == [
            ("full@far.test", "soft"),
            ("gone@far.test", "hard"),
            ("strict@far.test", "policy"),
        ]
        assert await ep.store.bounce_counts(ann, "Full@far.test") == {"soft": 1}


async def test_bounce_address_edge_cases(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        await ep.store.link_outbound(ann, sent_message_id="msg_8", message_id="out8@acme.test")
        bounce = [Route("bounces@rp.acme.test", "__bounce__")]
        # a DSN for a message we never sent: accepted, nothing stored
        assert (
            await ep.handler.deliver("", bounce, dsn("other@x", [("a@b.test", "failed", "5.1.1")]))
        )[0] == "2"
        # a malformed report: accepted and dropped
        broken = (
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n--B--"
        )
        assert (await ep.handler.deliver("", bounce, broken))[0] == "2"
        # an unrelated message to the bounce address: dropped
        assert (await ep.handler.deliver("x@y.test", bounce, message()))[0] == "2"
        assert await ep.store.list_inbound(ann, after=None, offset=0, limit=10) == []
        assert ep.suppression.entries == []
        # an out-of-office sent to the return path: filed for the sender of the original
        ooo = message(subject="Out of Office: back Monday", in_reply_to="<out8@acme.test>")
        assert (await ep.handler.deliver("x@y.test", bounce, ooo))[0] == "2"
        (row,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        assert row.auto_reply == "out_of_office"
        assert row.kind == "message"
        # the bounce local part on a domain neither routed nor a bounce domain is refused
        route, reply = await ep.handler.route("bounces@nowhere.test")
        assert route is None
        assert reply.startswith("550 5.7.1")
        route, _ = await ep.handler.route("bounces+tag@acme.test")
        assert route is not None
        assert route.user_id == "__bounce__"


async def test_delete_of_a_threaded_message_updates_its_conversation(
    db: Database, tmp_path: Path
) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        await ep.handler.deliver("b@c.test", [Route("ann@acme.test", ann)], message())
        (row,) = await ep.store.list_inbound(ann, after=None, offset=0, limit=10)
        assert await ep.store.delete("someone-else", row.id) is None
        deleted = await ep.store.delete(ann, row.id)
        assert deleted is not None
        assert await ep.store.conversation(ann, row.conversation_id or "") is None
        assert await ep.store.thread_of(ann, "m1@client.test") is None


async def test_sessions_beyond_the_cap_get_421(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    config = InboundConfig(max_sessions=1)
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=config) as ep:
        first = await _client(ep.port)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
            await _client(ep.port)
        assert refused.value.code == 421
        await first.quit()
        for _ in range(200):  # the first session ends once the server has seen QUIT through
            try:
                third = await _client(ep.port)
            except aiosmtplib.SMTPConnectResponseError:
                await asyncio.sleep(0.05)
                continue
            await third.quit()
            break
        else:
            pytest.fail("the session count never went down")


def test_split_address() -> None:
    assert split_address("Ann@Acme.TEST.") == ("ann", "acme.test")
    for bad in (
        "",
        "no-at",
        "@acme.test",
        "ann@",
        "a b@acme.test",
        "ann@acme..test",
        "x" * 65 + "@a.test",
    ):
        assert split_address(bad) is None


def test_handler_has_no_hidden_defaults() -> None:
    assert InboundConfig().max_bytes == 10 * 1024 * 1024
    assert InboundHandler.__init__.__kwdefaults__ == {"config": None}
