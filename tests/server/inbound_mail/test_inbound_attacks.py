"""Attacks on the inbound SMTP endpoint over real sockets (SQLite and PostgreSQL): one host
taking every session, a dictionary attack of RCPTs, a session kept alive for ever by a trickle,
over-long command and data lines; and hostile MIME (a non-ASCII content type that would break
the attachment download's header, encoded CR/LF in a header)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiosmtplib
import pytest
from inbound_helpers import make_users, running_endpoint

from server.db.engine import Database
from server.mail.inbound_parse import decode_header_value, parse_message
from server.mail.inbound_smtp import InboundConfig


async def _client(port: int, source: str | None = None) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        start_tls=False,
        timeout=10,
        source_address=(source, 0) if source else None,
    )
    await client.connect()
    return client


async def test_one_host_cannot_take_every_session(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    config = InboundConfig(max_sessions_per_peer=2)
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=config) as ep:
        held = [await _client(ep.port), await _client(ep.port)]
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
            await _client(ep.port)
        assert refused.value.code == 421
        other = await _client(ep.port, source="127.0.0.2")  # another host still gets in
        assert (await other.noop()).code == 250
        for client in [*held, other]:
            await client.quit()


class CountingRouting:
    """Routing that counts its lookups."""

    def __init__(self, owner: str) -> None:
        self.owner_id = owner
        self.lookups = 0

    async def owner(self, domain: str) -> str | None:
        self.lookups += 1
        return self.owner_id if domain == "acme.test" else None


async def test_a_dictionary_attack_is_cut_short(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    config = InboundConfig(max_refused_recipients=3)
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=config) as ep:
        routing = CountingRouting(ann)
        ep.handler.routing = routing
        client = await _client(ep.port)
        await client.ehlo()
        await client.mail("probe@attacker.test")
        codes = []
        for i in range(3):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(f"user{i}@elsewhere.test")
            codes.append(refused.value.code)
        assert codes == [550, 550, 550]
        with pytest.raises((aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPServerDisconnected)):
            await client.rcpt("ann@acme.test")  # even a good one: the session is over
        assert routing.lookups == 3
        await _until_closed(client)


async def test_a_trickling_session_ends_at_its_lifetime(db: Database, tmp_path: Path) -> None:
    (ann,) = await make_users(db, "ann")
    config = InboundConfig(max_session_seconds=0.3)
    async with running_endpoint(db, tmp_path, {"acme.test": ann}, config=config) as ep:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        assert (await reader.readline()).startswith(b"220")
        lines: list[bytes] = []
        async with asyncio.timeout(30):  # a bound on the test, not a timing assertion
            try:
                while True:  # each NOOP restarts aiosmtpd's idle timer; the lifetime holds
                    writer.write(b"NOOP\r\n")
                    line = await reader.readline()
                    if not line or line.startswith(b"421"):
                        break
                    lines.append(line)
                    await asyncio.sleep(0.02)
            except ConnectionResetError:
                pass  # closed while a NOOP was on its way
        assert lines
        assert all(line.startswith(b"250") for line in lines)
        writer.close()


async def test_over_long_lines_are_refused_and_nothing_is_stored(
    db: Database, tmp_path: Path
) -> None:
    (ann,) = await make_users(db, "ann")
    async with running_endpoint(db, tmp_path, {"acme.test": ann}) as ep:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        await reader.readline()
        writer.write(b"EHLO x\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"MAIL FROM:<" + b"a" * 5000 + b"@x.test>\r\n")
        assert (await reader.readline()).startswith(b"500")
        writer.write(b"MAIL FROM:<b@x.test>\r\n")
        assert (await reader.readline()).startswith(b"250")
        writer.write(b"RCPT TO:<ann@acme.test>\r\n")
        assert (await reader.readline()).startswith(b"250")
        writer.write(b"DATA\r\n")
        assert (await reader.readline()).startswith(b"354")
        writer.write(b"Subject: x\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\n")
        reply = await reader.readline()
        assert reply.startswith(b"5"), reply
        writer.write(b"QUIT\r\n")
        await reader.readline()
        writer.close()
        assert await ep.store.list_inbound(ann, after=None, offset=0, limit=5) == []
        assert not any(p.suffix == ".eml" for p in await asyncio.to_thread(_files, tmp_path))


def _files(root: Path) -> list[Path]:
    return list(root.rglob("*"))


async def _until_closed(client: aiosmtplib.SMTP) -> None:
    """NOOP until the server has closed the connection (a bound of 50 tries)."""
    for _ in range(50):
        try:
            await client.noop()
        except aiosmtplib.SMTPServerDisconnected:
            client.close()
            return
        await asyncio.sleep(0.05)
    pytest.fail("the server kept the connection open")


def test_a_non_ascii_content_type_is_octet_stream() -> None:
    payload = base64.b64encode(b"%PDF").decode()
    raw = (
        "From: b@x.test\nTo: ann@acme.test\nSubject: x\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: text/plain\n\nhi\n'
        "--B\nContent-Type: application/p\u0434f\nContent-Transfer-Encoding: base64\n"
        f'Content-Disposition: attachment; filename="a.pdf"\n\n{payload}\n--B--\n'
    ).encode()
    parsed = parse_message(raw)
    (attachment,) = parsed.attachments
    assert attachment.content_type == "application/octet-stream"
    attachment.content_type.encode("latin-1")  # fit for a response header


def test_encoded_line_breaks_never_survive_in_header_values() -> None:
    value = decode_header_value("=?utf-8?q?a=0D=0ABcc:_x=0Ay?=")
    assert "\r" not in value
    assert "\n" not in value
