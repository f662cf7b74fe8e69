"""SmtpSession against the real Postfix lab and the aiosmtpd fake for what Postfix can't do."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
from lab.fakesmtp import SPAMHAUS_REPLY, Behaviour, FakeSmtpServer, fake_smtp, full_backlog
from lab.maillab import MailLab

from emailintel.errors import AddressError, ConfigError, InjectionError
from emailintel.models import SmtpReply
from emailintel.smtp.replies import ReplyKind, classify
from emailintel.smtp.session import (
    SmtpConnectError,
    SmtpDisconnectedError,
    SmtpProtocolError,
    SmtpSession,
    SmtpTimeoutError,
    SmtpTLSError,
    Timeouts,
    probe_tls_context,
)

HELO = "probe.verifier.test"
FAST = Timeouts(connect=2, banner=2, command=2)


def kind(reply: SmtpReply) -> ReplyKind:
    return classify(reply.stage, reply.code, reply.message).kind


def session(lab: MailLab, listener: str, **kwargs: object) -> SmtpSession:
    mx_host, ip = lab.mx(_domain_of(lab, listener))[0]
    return SmtpSession(
        ip,
        server_hostname=mx_host,
        helo=HELO,
        timeouts=FAST,
        source_address=lab.fresh_source(),
        **kwargs,  # type: ignore[arg-type]
    )


def _domain_of(lab: MailLab, listener: str) -> str:
    return next(d.name for d in lab.domains if d.mx == (listener,))


# --- against the real Postfix --------------------------------------------------------------------


async def test_known_unknown_and_relay(mail_lab: MailLab) -> None:
    async with session(mail_lab, "main") as s:
        assert s.banner is not None
        assert s.banner.code == 220
        assert "mx.company.test" in s.banner.message
        assert "pipelining" in s.extensions
        assert (await s.mail_from("")).code == 250
        known = await s.rcpt("john.smith@company.test")
        unknown = await s.rcpt("nobody@company.test")
        relay = await s.rcpt("someone@gmail.com")
    assert (known.stage, known.code, known.enhanced_code) == ("rcpt", 250, "2.1.5")
    assert known.elapsed_ms is not None
    assert (unknown.code, unknown.enhanced_code) == (550, "5.1.1")
    assert kind(unknown) is ReplyKind.MAILBOX_NOT_FOUND
    assert relay.code == 554
    assert kind(relay) is ReplyKind.BLOCKED
    assert set(s.timings_ms) >= {"connect", "banner", "ehlo"}


async def test_catch_all_accepts_anything(mail_lab: MailLab) -> None:
    async with session(mail_lab, "catchall") as s:
        await s.mail_from("probe@verifier.test")
        reply = await s.rcpt("zq8w-nobody-here@catchall.test")
    assert reply.code == 250


async def test_rset_starts_a_new_transaction(mail_lab: MailLab) -> None:
    async with session(mail_lab, "main") as s:
        await s.mail_from("")
        assert (await s.rset()).code == 250
        # RCPT without MAIL is a sequence error: proof that RSET really reset the transaction
        after_rset = await s.rcpt("info@company.test")
        assert after_rset.code == 503
        assert kind(after_rset) is ReplyKind.PROTOCOL_ERROR
        await s.mail_from("")
        assert (await s.rcpt("info@company.test")).code == 250


async def test_smtputf8_sender_and_recipient(mail_lab: MailLab) -> None:
    async with session(mail_lab, "main") as s:
        assert (await s.mail_from("prøbe@verifier.test")).code == 250
        reply = await s.rcpt("jöhn@company.test")
    assert reply.code == 550


async def test_greylisted_then_accepted_after_the_delay(mail_lab: MailLab) -> None:
    source = mail_lab.fresh_source()
    mx_host, ip = mail_lab.mx("greylist.test")[0]

    async def probe() -> SmtpReply:
        async with SmtpSession(
            ip, server_hostname=mx_host, helo=HELO, timeouts=FAST, source_address=source
        ) as s:
            await s.mail_from("probe@verifier.test")
            return await s.rcpt("info@greylist.test")

    first = await probe()
    assert (first.code, first.enhanced_code) == (450, "4.2.0")
    verdict = classify(first.stage, first.code, first.message)
    assert verdict.kind is ReplyKind.GREYLISTED
    assert verdict.retry_after is not None
    await asyncio.sleep(mail_lab.greylist_delay)
    for _ in range(40):
        later = await probe()
        if later.code != 450:
            break
        await asyncio.sleep(0.25)
    assert later.code == 250


async def test_greylist_does_not_hide_unknown_users(mail_lab: MailLab) -> None:
    async with session(mail_lab, "greylist") as s:
        await s.mail_from("probe@verifier.test")
        reply = await s.rcpt("nobody@greylist.test")
    assert reply.code == 550


async def test_starttls_opportunistic_with_shared_context(mail_lab: MailLab) -> None:
    async with session(mail_lab, "main") as s:
        assert s.tls
        assert s.starttls_reply is not None
        assert s.starttls_reply.code == 220
        assert "starttls" not in s.extensions  # EHLO was repeated inside TLS
        await s.mail_from("")
        assert (await s.rcpt("info@company.test")).code == 250
    assert s.tls_context is probe_tls_context()


async def test_starttls_never_stays_plain(mail_lab: MailLab) -> None:
    async with session(mail_lab, "main", starttls="never") as s:
        assert not s.tls
        assert "starttls" in s.extensions


async def test_starttls_verified_against_the_lab_ca(mail_lab: MailLab) -> None:
    context = ssl.create_default_context(cafile=str(mail_lab.cert_path))
    async with session(mail_lab, "main", starttls="required", tls_context=context) as s:
        assert s.tls


async def test_starttls_wrong_name_is_a_tls_error(mail_lab: MailLab) -> None:
    context = ssl.create_default_context(cafile=str(mail_lab.cert_path))
    s = SmtpSession(
        mail_lab.ip("main"),
        server_hostname="mx.elsewhere.example",
        helo=HELO,
        timeouts=FAST,
        tls_context=context,
        source_address=mail_lab.fresh_source(),
    )
    with pytest.raises(SmtpTLSError) as info:
        await s.open()
    assert info.value.stage == "starttls"
    assert not s.connected


async def test_validating_certs_rejects_self_signed(mail_lab: MailLab) -> None:
    with pytest.raises(SmtpTLSError):
        async with session(mail_lab, "main", verify_certs=True):
            pass


async def test_connect_refused_on_dead_mx(mail_lab: MailLab) -> None:
    with pytest.raises(SmtpConnectError) as info:
        async with SmtpSession(mail_lab.ip("dead"), helo=HELO, timeouts=FAST):
            pass
    assert info.value.stage == "connect"


async def test_postfix_tarpit_banner_timeout(mail_lab: MailLab) -> None:
    assert mail_lab.tarpit_seconds > 0.5
    s = SmtpSession(
        mail_lab.ip("slow"),
        helo=HELO,
        timeouts=Timeouts(connect=2, banner=0.5, command=2),
        source_address=mail_lab.fresh_source(),
    )
    with pytest.raises(SmtpTimeoutError) as info:
        await s.open()
    assert info.value.stage == "banner"


async def test_strict_listener_452_after_recipient_limit(mail_lab: MailLab) -> None:
    limit = mail_lab.strict.recipient_limit
    async with session(mail_lab, "strict") as s:
        await s.mail_from("")
        replies = [await s.rcpt("info@strict.test") for _ in range(limit + 1)]
    assert [r.code for r in replies[:limit]] == [250] * limit
    assert (replies[limit].code, replies[limit].enhanced_code) == (452, "4.5.3")
    assert kind(replies[limit]) is ReplyKind.TOO_MANY_RECIPIENTS


async def test_strict_listener_421_after_too_many_errors(mail_lab: MailLab) -> None:
    async with session(mail_lab, "strict") as s:
        await s.mail_from("")
        replies = []
        for i in range(mail_lab.strict.hard_error_limit + 2):
            replies.append(await s.rcpt(f"nobody{i}@strict.test"))
            if replies[-1].code == 421:
                break
        final = replies[-1]
        assert final.code == 421
        assert s.refusal == final
        assert not s.connected
        # further commands return the refusal instead of raising
        assert await s.rcpt("info@strict.test") == final
    result = classify(final.stage, final.code, final.message)
    assert (result.kind, result.backoff) == (ReplyKind.TEMP_FAILURE, True)


async def test_bench_domain(mail_lab: MailLab) -> None:
    domain = mail_lab.domain("bench0137.test")
    mx_host, ip = mail_lab.mx(domain.name)[0]
    async with SmtpSession(ip, server_hostname=mx_host, helo=HELO, timeouts=FAST) as s:
        await s.mail_from("")
        ok = await s.rcpt(domain.addresses()[0])
        bad = await s.rcpt(f"nobody@{domain.name}")
    assert (ok.code, bad.code) == (250, 550)


# --- against the fake MX -------------------------------------------------------------------------


def fake_session(server: FakeSmtpServer, **kwargs: object) -> SmtpSession:
    options: dict[str, object] = {"timeouts": FAST, "helo": HELO} | kwargs
    return SmtpSession(server.host, port=server.port, **options)  # type: ignore[arg-type]


async def test_spamhaus_block_is_blocked_not_invalid() -> None:
    with fake_smtp(Behaviour(rcpt_reply=SPAMHAUS_REPLY)) as server:
        async with fake_session(server) as s:
            await s.mail_from("")
            reply = await s.rcpt("someone@fake.test")
    assert (reply.code, reply.enhanced_code) == (554, "5.7.1")
    assert "spamhaus" in reply.message
    assert kind(reply) is ReplyKind.BLOCKED


async def test_452_after_n_recipients_then_rset_recovers() -> None:
    with fake_smtp(Behaviour(max_recipients=3)) as server:
        async with fake_session(server) as s:
            await s.mail_from("")
            codes = [(await s.rcpt(f"u{i}@fake.test")).code for i in range(4)]
            await s.rset()
            await s.mail_from("")
            again = await s.rcpt("u9@fake.test")
    assert codes == [250, 250, 250, 452]
    assert again.code == 250


async def test_421_mid_session_ends_the_session_without_raising() -> None:
    with fake_smtp(Behaviour(disconnect_after_rcpts=2)) as server:
        async with fake_session(server) as s:
            await s.mail_from("")
            first = [await s.rcpt(f"u{i}@fake.test") for i in range(2)]
            closing = await s.rcpt("u2@fake.test")
            assert closing.code == 421
            assert s.refusal == closing
            assert await s.rset() == closing
    assert [r.code for r in first] == [250, 250]
    assert kind(closing) is ReplyKind.TEMP_FAILURE


async def test_slow_banner_within_timeout_is_fine() -> None:
    with fake_smtp(Behaviour(banner_delay=0.3)) as server:
        async with fake_session(server) as s:
            assert s.banner is not None
            assert s.banner.code == 220


async def test_banner_timeout_is_typed() -> None:
    with fake_smtp(Behaviour(banner_delay=30)) as server:
        s = fake_session(server, timeouts=Timeouts(connect=2, banner=0.3, command=2))
        with pytest.raises(SmtpTimeoutError) as info:
            await s.open()
    assert info.value.stage == "banner"


async def test_command_timeout_is_typed() -> None:
    with fake_smtp(Behaviour(rcpt_delay=30)) as server:
        async with fake_session(server, timeouts=Timeouts(connect=2, banner=2, command=0.3)) as s:
            await s.mail_from("")
            with pytest.raises(SmtpTimeoutError) as info:
                await s.rcpt("slow@fake.test")
            assert info.value.stage == "rcpt"
            with pytest.raises(SmtpDisconnectedError):
                await s.rcpt("again@fake.test")


async def test_connect_timeout_is_typed() -> None:
    with full_backlog() as port:
        s = SmtpSession(
            "127.0.0.1", port=port, helo=HELO, timeouts=Timeouts(connect=0.3, banner=2, command=2)
        )
        with pytest.raises(SmtpTimeoutError) as info:
            await s.open()
    assert info.value.stage == "connect"


async def test_refusing_banner_is_returned_not_raised() -> None:
    banner = SPAMHAUS_REPLY.format(ip="127.0.0.1")
    with fake_smtp(Behaviour(banner=banner)) as server:
        async with fake_session(server) as s:
            assert s.banner is not None
            assert s.banner.code == 554
            assert s.refusal == s.banner
            assert await s.mail_from("") == s.banner
            assert await s.rcpt("a@fake.test") == s.banner
    assert kind(s.banner) is ReplyKind.BLOCKED


async def test_garbage_banner_is_a_protocol_error() -> None:
    garbage = Behaviour(banner="HTTP/1.1 400 Bad Request")
    with fake_smtp(garbage) as server, pytest.raises(SmtpProtocolError) as info:
        await fake_session(server).open()
    assert info.value.stage == "banner"


async def test_hangup_before_banner_is_a_disconnect() -> None:
    hangup = Behaviour(hangup_at_banner=True)
    with fake_smtp(hangup) as server, pytest.raises(SmtpDisconnectedError) as info:
        await fake_session(server).open()
    assert info.value.stage == "banner"


async def test_ehlo_refused_falls_back_to_helo() -> None:
    with fake_smtp(Behaviour(ehlo_reply="502 5.5.2 Error: command not recognized")) as server:
        async with fake_session(server) as s:
            assert s.ehlo_reply is not None
            assert s.ehlo_reply.code == 250
            assert s.extensions == {}
            assert not s.tls
            await s.mail_from("")
            assert (await s.rcpt("a@fake.test")).code == 250


async def test_ehlo_and_helo_refused_is_a_refusal() -> None:
    refuse = Behaviour(
        ehlo_reply="550 5.7.1 Go away", helo_reply="550 5.7.1 Client host rejected: go away"
    )
    with fake_smtp(refuse) as server:
        async with fake_session(server) as s:
            assert s.refusal is not None
            assert s.refusal.code == 550
            assert await s.mail_from("") == s.refusal
    assert kind(s.refusal) is ReplyKind.BLOCKED


STARTTLS_BUT_454 = Behaviour(ehlo_reply="250-mx.fake.test\r\n250-PIPELINING\r\n250 STARTTLS")


async def test_starttls_refused_opportunistic_continues_in_plain() -> None:
    with fake_smtp(STARTTLS_BUT_454) as server:
        async with fake_session(server) as s:
            assert s.starttls_reply is not None
            assert s.starttls_reply.code == 454
            assert not s.tls
            await s.mail_from("")
            assert (await s.rcpt("a@fake.test")).code == 250


async def test_starttls_refused_when_required_is_a_tls_error() -> None:
    with fake_smtp(STARTTLS_BUT_454) as server, pytest.raises(SmtpTLSError) as info:
        await fake_session(server, starttls="required").open()
    assert info.value.stage == "starttls"


async def test_garbage_reply_mid_session_is_a_protocol_error() -> None:
    with fake_smtp(Behaviour(rcpt_reply="what is this")) as server:
        async with fake_session(server) as s:
            await s.mail_from("")
            with pytest.raises(SmtpProtocolError) as info:
                await s.rcpt("a@fake.test")
            assert info.value.stage == "rcpt"
            assert not s.connected


async def test_caller_supplied_socket_is_used() -> None:
    """The proxy path: a connected socket (e.g. from python-socks) instead of an address."""
    with fake_smtp(Behaviour()) as server:
        sock = socket.create_connection((server.host, server.port), timeout=2)
        sock.setblocking(False)
        async with SmtpSession("proxied", sock=sock, helo=HELO, timeouts=FAST) as s:
            assert "connect" not in s.timings_ms
            await s.mail_from("")
            assert (await s.rcpt("a@fake.test")).code == 250
        assert not s.connected
        for _ in range(20):  # the transport closes the socket from a loop callback
            if sock.fileno() == -1:
                break
            await asyncio.sleep(0)
        assert sock.fileno() == -1


async def test_starttls_required_but_not_offered() -> None:
    with fake_smtp(Behaviour()) as server, pytest.raises(SmtpTLSError) as info:
        await fake_session(server, starttls="required").open()
    assert info.value.stage == "starttls"


async def test_commands_after_close_raise_disconnected() -> None:
    with fake_smtp(Behaviour()) as server:
        async with fake_session(server) as s:
            await s.mail_from("")
        with pytest.raises(SmtpDisconnectedError) as info:
            await s.rcpt("a@fake.test")
    assert info.value.stage == "rcpt"


async def test_open_twice_is_an_error() -> None:
    with fake_smtp(Behaviour()) as server:
        async with fake_session(server) as s:
            with pytest.raises(ConfigError):
                await s.open()


@pytest.mark.parametrize(
    "address", ["a@b.test\r\nDATA", "a@b.test>", "<a@b.test", "a\x00@b.test", "x" * 400, ""]
)
async def test_injection_is_refused_before_sending(address: str) -> None:
    with fake_smtp(Behaviour()) as server:
        async with fake_session(server) as s:
            await s.mail_from("")
            with pytest.raises(InjectionError):
                await s.rcpt(address)
            with pytest.raises(InjectionError):
                await s.mail_from(address + "\n")
    assert server.behaviour.received == []


@pytest.mark.parametrize("address", ["\ud800@b.test", "a@\udcff.test"])
async def test_lone_surrogate_is_a_typed_error_before_sending(address: str) -> None:
    with fake_smtp(Behaviour()) as server:
        async with fake_session(server) as s:
            for command in (
                lambda: s.mail_from(address),
                lambda: s.rcpt(address),
                lambda: s.rcpt_many([address, "a@b.test"]),
                lambda: s.transaction("", ["a@b.test", address]),
            ):
                with pytest.raises(AddressError) as info:
                    await command()
                assert info.value.code == "syntax_invalid"
    assert server.behaviour.received == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host_ip": "mx.company.test"},
        {"host_ip": "127.0.0.1", "helo": "bad helo"},
        {"host_ip": "127.0.0.1", "helo": ""},
        {"host_ip": "127.0.0.1", "port": 0},
        {"host_ip": "127.0.0.1", "starttls": "maybe"},
        {"host_ip": "127.0.0.1", "source_address": "localhost"},
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"helo": HELO} | kwargs
    with pytest.raises(ConfigError):
        SmtpSession(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["connect", "banner", "command"])
@pytest.mark.parametrize("value", [0, -1, True])
def test_bad_timeouts_raise(field: str, value: float) -> None:
    with pytest.raises(ConfigError):
        Timeouts(**{field: value})
