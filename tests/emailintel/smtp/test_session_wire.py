"""SmtpSession over the wire: TLS resumption and cheap close against Postfix, hostile servers.

The hostile servers are tiny asyncio servers on loopback that answer from a script, for replies
neither Postfix nor aiosmtpd can be made to send (bytes after the 220 to STARTTLS, endless or
overlong replies, a QUIT left unanswered).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from lab.maillab import MailLab

from emailintel.smtp.session import (
    SmtpDisconnectedError,
    SmtpProtocolError,
    SmtpSession,
    Timeouts,
    shared_tls_sessions,
)
from emailintel.smtp.tlssessions import TlsSessionCache

HELO = "probe.verifier.test"
FAST = Timeouts(connect=2, banner=2, command=2)
SLOW = Timeouts(connect=2, banner=2, command=60)  # a close that waited would hang, not pass


def lab_session(lab: MailLab, **kwargs: object) -> tuple[SmtpSession, str]:
    mx_host, ip = lab.mx("company.test")[0]
    source = lab.fresh_source()
    s = SmtpSession(
        ip,
        server_hostname=mx_host,
        helo=HELO,
        timeouts=FAST,
        source_address=source,
        **kwargs,  # type: ignore[arg-type]
    )
    return s, source


async def postfix_disconnect_line(lab: MailLab, source: str) -> str:
    """Postfix's ``disconnect from ...[source] ... commands=`` log line (it logs asynchronously)."""
    pattern = re.compile(rf"disconnect from \S+\[{re.escape(source)}\] (.*)")
    for _ in range(200):
        if lab.log_path.exists():
            for line in reversed(lab.log_path.read_text(errors="replace").splitlines()):
                if match := pattern.search(line):
                    return match.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"Postfix logged no disconnect from {source}")


# --- against the real Postfix --------------------------------------------------------------------


async def test_second_connection_to_the_same_mx_resumes_tls(mail_lab: MailLab) -> None:
    cache = TlsSessionCache()
    first, _ = lab_session(mail_lab, tls_sessions=cache)
    async with first:
        assert first.tls
        assert not first.tls_resumed
    assert len(cache) == 1
    second, _ = lab_session(mail_lab, tls_sessions=cache)
    async with second:
        assert second.tls
        assert second.tls_resumed
        await second.mail_from("")
        assert (await second.rcpt("john.smith@company.test")).code == 250
    third, _ = lab_session(mail_lab, tls_sessions=TlsSessionCache())
    async with third:
        assert not third.tls_resumed  # a cache of its own: nothing to resume


async def test_sessions_share_the_process_cache_by_default(mail_lab: MailLab) -> None:
    s, _ = lab_session(mail_lab)
    assert s.tls_sessions is shared_tls_sessions()
    async with s:
        pass
    again, _ = lab_session(mail_lab)
    async with again:
        assert again.tls_resumed


@pytest.mark.parametrize("starttls", ["opportunistic", "never"])
async def test_close_sends_quit_and_postfix_sees_it(mail_lab: MailLab, starttls: str) -> None:
    s, source = lab_session(mail_lab, starttls=starttls, tls_sessions=TlsSessionCache())
    await s.open()
    assert s.tls is (starttls == "opportunistic")
    await s.mail_from("")
    await s.close()
    assert not s.connected
    summary = await postfix_disconnect_line(mail_lab, source)
    assert "quit=1" in summary
    assert ("starttls=1" in summary) is (starttls == "opportunistic")


async def test_quit_returns_the_221_then_drops_the_connection(mail_lab: MailLab) -> None:
    s, source = lab_session(mail_lab, tls_sessions=TlsSessionCache())
    await s.open()
    reply = await s.quit()
    assert (reply.stage, reply.code, reply.enhanced_code) == ("quit", 221, "2.0.0")
    assert not s.connected
    with pytest.raises(SmtpDisconnectedError):
        await s.rcpt("john.smith@company.test")
    assert "quit=1" in await postfix_disconnect_line(mail_lab, source)


# --- against scripted servers --------------------------------------------------------------------


@dataclass
class Scripted:
    """What a scripted server was sent, and whether the connection ended."""

    host: str
    port: int
    lines: list[bytes] = field(default_factory=list)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)


EHLO_OK = b"250-scripted.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


def answers(table: dict[bytes, bytes]) -> Callable[[bytes], bytes | None]:
    """Reply by command verb; unknown verbs get ``250 ok`` (an empty reply: no answer)."""
    return lambda line: table.get(line.split()[0].upper() if line.split() else b"", b"250 ok\r\n")


@asynccontextmanager
async def scripted(
    answer: Callable[[bytes], bytes | None], banner: bytes = b"220 scripted.test ESMTP\r\n"
) -> AsyncIterator[Scripted]:
    state = Scripted("127.0.0.1", 0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(banner)
            while line := await reader.readline():
                state.lines.append(line)
                reply = answer(line)
                if reply is None:
                    break  # hang up
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            state.hung_up.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def scripted_session(server: Scripted, timeouts: Timeouts = FAST) -> SmtpSession:
    return SmtpSession(server.host, port=server.port, helo=HELO, timeouts=timeouts)


async def test_close_does_not_wait_for_the_221() -> None:
    """The server never answers QUIT; close() returns anyway and the server saw QUIT, then EOF."""
    async with scripted(answers({b"EHLO": EHLO_OK, b"QUIT": b""})) as server:
        s = scripted_session(server, SLOW)
        await s.open()
        await s.close()
        await server.hung_up.wait()
    assert server.lines[-1] == b"QUIT\r\n"


async def test_bytes_after_the_starttls_220_are_refused() -> None:
    """RFC 3207 §6: plaintext sent after the 220 must not be read as a reply inside TLS."""
    injected = b"220 go ahead\r\n250 injected\r\n"
    async with scripted(answers({b"EHLO": EHLO_OK, b"STARTTLS": injected})) as server:
        s = scripted_session(server)
        with pytest.raises(SmtpProtocolError) as info:
            await s.open()
    assert info.value.stage == "starttls"
    assert not s.connected


async def test_overlong_banner_line_is_a_protocol_error() -> None:
    async with scripted(answers({}), banner=b"220 " + b"x" * 10_000 + b"\r\n") as server:
        s = scripted_session(server)
        with pytest.raises(SmtpProtocolError) as info:
            await s.open()
    assert info.value.stage == "banner"


async def test_endless_multiline_reply_is_a_protocol_error() -> None:
    endless = b"250-scripted.test\r\n" + b"250-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n" * 5000
    async with scripted(answers({b"EHLO": endless})) as server:
        s = scripted_session(server)
        with pytest.raises(SmtpProtocolError) as info:
            await s.open()
    assert info.value.stage == "ehlo"
    assert not s.connected


async def test_unsolicited_reply_becomes_the_refusal() -> None:
    """A reply that arrives with another (here: a 421 after the MAIL reply) answers the next RCPT."""
    table = {b"EHLO": b"250 scripted.test\r\n", b"MAIL": b"250 ok\r\n421 4.7.0 bye\r\n"}
    async with scripted(answers(table)) as server, scripted_session(server) as s:
        assert (await s.mail_from("")).code == 250
        reply = await s.rcpt("a@b.test")
        assert (reply.stage, reply.code, reply.enhanced_code) == ("rcpt", 421, "4.7.0")
        assert not s.connected
        assert await s.rcpt_many(["c@b.test", "d@b.test"]) == [reply, reply]
    assert all(not line.startswith(b"RCPT") for line in server.lines)


async def test_hangup_mid_batch_returns_the_replies_so_far() -> None:
    rcpts = [0]

    def answer(line: bytes) -> bytes | None:
        if line.startswith(b"RCPT"):
            rcpts[0] += 1
            return b"250 2.1.5 ok\r\n" if rcpts[0] == 1 else None
        return answers({b"EHLO": b"250-scripted.test\r\n250 PIPELINING\r\n"})(line)

    async with scripted(answer) as server, scripted_session(server) as s:
        setup, replies = await s.transaction("", ["a@b.test", "c@b.test", "d@b.test"])
        assert not s.connected
    assert [r.code for r in setup] == [250]
    assert [(r.stage, r.code) for r in replies] == [("rcpt", 250)]


async def test_nagle_is_off_on_a_caller_supplied_socket() -> None:
    """asyncio leaves Nagle on for sockets made without proto=IPPROTO_TCP (python-socks' kind);
    then a command written right after the TLS Finished waits ~40 ms for a delayed ACK."""
    async with scripted(answers({b"EHLO": b"250 scripted.test\r\n"})) as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as a proxy may hand us
        sock.connect((server.host, server.port))
        sock.setblocking(False)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        async with SmtpSession("proxied", sock=sock, helo=HELO, timeouts=FAST) as s:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert (await s.mail_from("")).code == 250


async def test_a_starttls_reply_filling_a_whole_read_is_refused() -> None:
    """A 220 that ends exactly where a read ends may have injected bytes right behind it.

    However the kernel splits these bytes, the session must not start TLS on top of them.
    """
    line = b"220-" + b"p" * 1018 + b"\r\n"  # 1024 bytes
    huge = line * 63 + b"220-" + b"p" * (1024 - 4 - 2 - 8) + b"\r\n220 go\r\n"
    assert len(huge) == 65_536
    async with scripted(
        answers({b"EHLO": EHLO_OK, b"STARTTLS": huge + b"250 injected\r\n"})
    ) as server:
        s = scripted_session(server)
        with pytest.raises(SmtpProtocolError) as info:
            await s.open()
    assert info.value.stage == "starttls"
