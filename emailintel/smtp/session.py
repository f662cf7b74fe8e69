"""One SMTP probing session over aiosmtplib: connect, banner, EHLO, STARTTLS, MAIL, RCPT, RSET.

The thin I/O edge of the SMTP engine. SMTP replies are returned, never raised; only failures
that leave no reply to report (connect refused, timeout, TLS failure, lost connection) raise a
typed :class:`SmtpSessionError` that names the stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import Literal, Self

import aiosmtplib
from aiosmtplib.esmtp import parse_esmtp_extensions

from emailintel.errors import AddressError, ConfigError, EmailIntelError, InjectionError
from emailintel.models import SmtpReply, SmtpStage
from emailintel.smtp.replies import parse_enhanced_code

StartTlsMode = Literal["opportunistic", "required", "never"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>\u2028\u2029]")
_HELO = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


class SmtpSessionError(EmailIntelError):
    """A session failure with no SMTP reply to show for it; ``stage`` says where it happened."""

    def __init__(self, stage: SmtpStage, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage: SmtpStage = stage


class SmtpConnectError(SmtpSessionError):
    """The TCP connection could not be made (refused, unreachable) or closed before a banner."""


class SmtpTimeoutError(SmtpSessionError):
    """A stage's timeout ran out (connect, banner, or a command)."""


class SmtpTLSError(SmtpSessionError):
    """STARTTLS failed or was required but not offered."""


class SmtpDisconnectedError(SmtpSessionError):
    """The server closed the connection without a closing reply, or the session was closed."""


class SmtpProtocolError(SmtpSessionError):
    """The server sent something that is not an SMTP reply."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed per stage; the banner gets long because tarpits delay it (Reacher #1320)."""

    connect: float = 10.0
    banner: float = 30.0
    command: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "banner", "command"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"timeout {name} must be a positive number, got {value!r}")


def probe_tls_context(*, verify: bool = False) -> ssl.SSLContext:
    """A TLS client context shared by all sessions (one per process: building one costs ~50 ms).

    A probe needs encryption, not authentication, so certificates are not verified by default.
    """
    return _tls_context(verify)


@cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def encode_path(address: str, what: str = "recipient", *, allow_empty: bool = False) -> bytes:
    """The UTF-8 bytes of a MAIL/RCPT path; a typed AddressError for anything unsafe to send.

    InjectionError for line breaks, controls, angle brackets (even quoted: a naive server would
    end the path there), overlong and (unless ``allow_empty``: the null sender) empty paths;
    ``syntax_invalid`` for text with lone surrogates.
    """
    if not address and not allow_empty:
        raise InjectionError(f"{what} is empty")
    if _UNSAFE.search(address):
        raise InjectionError(f"{what} contains characters that could inject SMTP commands")
    try:
        data = address.encode("utf-8")
    except UnicodeEncodeError:
        raise AddressError(
            f"{what} is not valid Unicode text (lone surrogate)", code="syntax_invalid"
        ) from None
    if len(data) > 320:
        raise InjectionError(f"{what} is too long for an SMTP command")
    return data


def _check_ip(host_ip: str) -> str:
    try:
        return str(ipaddress.ip_address(host_ip))
    except ValueError:
        # A host name here would be resolved by the system resolver, outside our DNS control.
        raise ConfigError(f"SmtpSession needs an IP address, got {host_ip!r}") from None


class SmtpSession:
    """``async with SmtpSession(ip, server_hostname=mx, helo=fqdn) as s: await s.rcpt(addr)``."""

    def __init__(
        self,
        host_ip: str,
        *,
        port: int = 25,
        server_hostname: str | None = None,
        helo: str,
        timeouts: Timeouts | None = None,
        starttls: StartTlsMode = "opportunistic",
        tls_context: ssl.SSLContext | None = None,
        verify_certs: bool = False,
        source_address: str | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.host_ip = _check_ip(host_ip) if sock is None else host_ip
        if not 0 < port < 65536:
            raise ConfigError(f"port out of range: {port!r}")
        if not _HELO.fullmatch(helo) or len(helo) > 255:
            raise ConfigError(f"HELO name must be a host name or address literal, got {helo!r}")
        if starttls not in ("opportunistic", "required", "never"):
            raise ConfigError(f"starttls must be opportunistic, required or never: {starttls!r}")
        self.port = port
        self.server_hostname = server_hostname
        self.helo = helo
        self.timeouts = timeouts or Timeouts()
        self.starttls_mode: StartTlsMode = starttls
        self.tls_context = tls_context or probe_tls_context(verify=verify_certs)
        self.source_address = _check_ip(source_address) if source_address else None
        self._sock = sock
        self._smtp: aiosmtplib.SMTP | None = None
        self.banner: SmtpReply | None = None
        self.ehlo_reply: SmtpReply | None = None
        self.starttls_reply: SmtpReply | None = None
        self.refusal: SmtpReply | None = None
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.timings_ms: dict[str, float] = {}
        self._wire = bytearray()  # a copy of what the server sent since the greeting
        self._arrived = asyncio.Event()  # set whenever the server sends something

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pipelining(self) -> bool:
        """True when the server advertised PIPELINING (RFC 2920) in its last EHLO reply."""
        return "pipelining" in self.extensions

    @property
    def connected(self) -> bool:
        """True while the connection is open and usable (a server refusal makes it unusable)."""
        return self.refusal is None and self._smtp is not None and self._smtp.is_connected

    async def open(self) -> None:
        """Connect, read the banner, EHLO (HELO fallback) and STARTTLS as configured."""
        if self._smtp is not None:
            raise ConfigError("session already opened")
        sock = self._sock = self._sock or await self._connect()
        self._smtp = aiosmtplib.SMTP(
            local_hostname=self.helo,
            timeout=self.timeouts.command,
            start_tls=False,
            validate_certs=False,
        )
        try:
            await self._read_banner(sock)
            if self.refusal is None:
                await self._greet()
            if self.refusal is None and self.starttls_mode != "never":
                await self._starttls()
        except BaseException:
            self._close_transport()
            raise

    async def close(self) -> None:
        """Send QUIT if still connected and drop the connection without waiting for the 221.

        The closing transport still flushes the QUIT; not waiting saves a round trip per session.
        """
        if self.connected and self._smtp is not None and self._smtp.protocol is not None:
            with contextlib.suppress(aiosmtplib.SMTPServerDisconnected, OSError):
                self._smtp.protocol.write(b"QUIT\r\n")
        self._close_transport()

    def _close_transport(self) -> None:
        if self._smtp is not None:
            # aiosmtplib's transport owns the socket from connect() on and closes it itself;
            # closing it here too would free the descriptor while the loop still maps it.
            self._smtp.close()
        elif self._sock is not None:
            self._sock.close()

    async def _connect(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host_ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        start = time.perf_counter()
        try:
            if self.source_address:
                sock.bind((self.source_address, 0))
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.timeouts.connect):
                await loop.sock_connect(sock, (self.host_ip, self.port))
        except TimeoutError:
            sock.close()
            raise SmtpTimeoutError(
                "connect", f"no TCP connection to {self.host_ip}:{self.port} in time"
            ) from None
        except OSError as exc:
            sock.close()
            raise SmtpConnectError(
                "connect", f"{self.host_ip}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self.timings_ms["connect"] = _ms_since(start)
        return sock

    async def _read_banner(self, sock: socket.socket) -> None:
        assert self._smtp is not None
        start = time.perf_counter()
        try:
            response = await self._smtp.connect(sock=sock, timeout=self.timeouts.banner)
            code, message = response.code, response.message
        except aiosmtplib.SMTPConnectResponseError as exc:
            code, message = exc.code, exc.message
        except aiosmtplib.SMTPTimeoutError:
            raise SmtpTimeoutError("banner", "no greeting in time") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise SmtpProtocolError("banner", exc.message) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise SmtpDisconnectedError("banner", f"closed before the greeting: {exc}") from None
        self.timings_ms["banner"] = _ms_since(start)
        self.banner = _reply("banner", code, message, start)
        if code != 220:
            self.refusal = self.banner
        elif self._smtp.protocol is not None:
            self._watch_unsolicited()

    async def _greet(self) -> None:
        hostname = self.helo.encode("ascii")
        reply = await self._execute("ehlo", b"EHLO", hostname)
        if reply.code != 250 and reply.code != 421 and self.connected:
            reply = await self._execute("ehlo", b"HELO", hostname)
            self.extensions = {}
        elif reply.code == 250:
            self.extensions, _ = parse_esmtp_extensions(reply.message)
        self.timings_ms["ehlo"] = self.timings_ms.get("ehlo", 0.0) + (reply.elapsed_ms or 0.0)
        self.ehlo_reply = reply
        if reply.code != 250:
            self.refusal = reply

    async def _starttls(self) -> None:
        assert self._smtp is not None
        if "starttls" not in self.extensions:
            if self.starttls_mode == "required":
                raise SmtpTLSError("starttls", "the server does not offer STARTTLS")
            return
        start = time.perf_counter()
        # aiosmtplib decides from its own state whether STARTTLS needs an EHLO first.
        assert self.ehlo_reply is not None
        self._smtp.last_ehlo_response = aiosmtplib.SMTPResponse(250, self.ehlo_reply.message)
        try:
            response = await self._smtp.starttls(
                server_hostname=self.server_hostname,
                tls_context=self.tls_context,
                timeout=self.timeouts.command,
            )
        except aiosmtplib.SMTPResponseException as exc:
            self._take_reply()
            self.starttls_reply = _reply("starttls", exc.code, exc.message, start)
            if exc.code == 421 or not self.connected:
                self.refusal = self.starttls_reply
                return
            if self.starttls_mode == "required":
                raise SmtpTLSError("starttls", f"refused: {exc.code} {exc.message}") from None
            return
        except aiosmtplib.SMTPTimeoutError:
            raise SmtpTimeoutError("starttls", "TLS handshake timed out") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SmtpTLSError("starttls", f"TLS handshake failed: {exc}") from None
        self._take_reply()
        self.starttls_reply = _reply("starttls", response.code, response.message, start)
        self.tls = True
        self.timings_ms["starttls"] = _ms_since(start)
        await self._greet()

    # --- commands --------------------------------------------------------------------------------

    async def mail_from(self, sender: str = "", *, smtputf8: bool | None = None) -> SmtpReply:
        """``MAIL FROM:<sender>`` (empty = null sender). SMTPUTF8 is added for non-ASCII senders."""
        return await self._command("mail", b"MAIL", *self._mail_args(sender, smtputf8))

    def _mail_args(self, sender: str, smtputf8: bool | None) -> list[bytes]:
        args = [b"FROM:<" + encode_path(sender, "sender", allow_empty=True) + b">"]
        wants_utf8 = (not sender.isascii()) if smtputf8 is None else smtputf8
        if wants_utf8 and "smtputf8" in self.extensions:
            args.append(b"SMTPUTF8")
        return args

    async def rcpt(self, address: str) -> SmtpReply:
        """``RCPT TO:<address>``; the reply says what the server thinks of that mailbox."""
        return await self._command("rcpt", b"RCPT", _rcpt_arg(address))

    async def rcpt_many(self, addresses: Sequence[str]) -> list[SmtpReply]:
        """RCPT for each address; with PIPELINING all in one write, replies read in order.

        Without PIPELINING (or for one address) the commands go one at a time. If the server
        closes mid-batch, the replies received so far are returned (none: SmtpDisconnectedError).
        """
        lines = [b"RCPT " + _rcpt_arg(address) for address in addresses]
        if not self.pipelining or len(addresses) < 2:
            return [await self.rcpt(address) for address in addresses]
        return await self._pipeline(["rcpt"] * len(lines), lines)

    async def transaction(
        self,
        sender: str,
        addresses: Sequence[str],
        *,
        reset: bool = False,
        smtputf8: bool | None = None,
    ) -> tuple[list[SmtpReply], list[SmtpReply]]:
        """``[RSET,] MAIL FROM`` and RCPTs, in one write with PIPELINING (RFC 2920).

        Returns (the RSET/MAIL replies, the RCPT replies). Without PIPELINING it stops at a
        refused RSET or MAIL (no RCPT replies then). The server answers RCPTs after a refused MAIL
        too (with 503): the caller must not read them as mailbox facts.
        """
        setup = [b"RSET"] if reset else []
        setup.append(b" ".join([b"MAIL", *self._mail_args(sender, smtputf8)]))
        rcpts = [b"RCPT " + _rcpt_arg(address) for address in addresses]
        if not self.pipelining:
            done: list[SmtpReply] = []
            if reset:
                done.append(await self.rset())
            if not done or _ok(done[-1]):
                done.append(await self.mail_from(sender, smtputf8=smtputf8))
            if len(done) < len(setup) or not _ok(done[-1]):
                return done, []
            return done, await self.rcpt_many(addresses)
        stages: list[SmtpStage] = ["rset"] if reset else []
        stages.append("mail")
        stages.extend("rcpt" for _ in rcpts)
        replies = await self._pipeline(stages, setup + rcpts)
        return replies[: len(setup)], replies[len(setup) :]

    async def _pipeline(
        self, stages: Sequence[SmtpStage], commands: list[bytes]
    ) -> list[SmtpReply]:
        """Write the commands at once and read their replies, in order, from the stream copy."""
        stage, count = stages[0], len(commands)
        lines = b"".join(command + b"\r\n" for command in commands)
        if self.refusal is None:
            self.refusal = self._unsolicited_reply(stage)
        if self.refusal is not None:
            return [self.refusal] * count
        if self._smtp is None or self._smtp.protocol is None or not self.connected:
            raise SmtpDisconnectedError(stage, "the session is not connected")
        start = time.perf_counter()
        # aiosmtplib expects no reply now and ignores these bytes; our stream copy keeps them.
        self._smtp.protocol.write(lines)
        replies: list[SmtpReply] = []
        try:
            async with asyncio.timeout(self.timeouts.command):
                while len(replies) < count:
                    raw = self._take_reply()
                    if raw is not None:
                        replies.append(_parse_raw(stages[len(replies)], raw, start))
                        continue
                    if not self.connected:
                        break
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            self._smtp.close()
            raise SmtpTimeoutError(stage, "no reply in time") from None
        except SmtpProtocolError:
            self._smtp.close()
            raise
        for reply in replies:
            if reply.code == 421:
                self._refused(reply)
                break
        if not replies:
            raise SmtpDisconnectedError(stage, "closed during a pipelined batch")
        return replies

    async def rset(self) -> SmtpReply:
        """``RSET``: start a new transaction on the same connection."""
        return await self._command("rset", b"RSET")

    async def _command(self, stage: SmtpStage, *args: bytes) -> SmtpReply:
        if self.refusal is None:
            self.refusal = self._unsolicited_reply(stage)
        if self.refusal is not None:
            return self.refusal
        try:
            reply = await self._execute(stage, *args)
        except SmtpDisconnectedError:
            self.refusal = self._unsolicited_reply(stage)
            if self.refusal is None:
                raise
            return self.refusal
        if reply.code == 421:
            self._refused(reply)
        return reply

    def _refused(self, reply: SmtpReply) -> None:
        """A 421: the server is closing the channel (RFC 5321 §3.8), so we close our side too."""
        self.refusal = reply
        self._close_transport()

    def _watch_unsolicited(self) -> None:
        """Keep a copy of the server's byte stream to find replies nobody asked for.

        aiosmtplib drops data that arrives after a reply (so it cannot be mistaken for the next
        one); Postfix's parting ``421 ... too many errors`` is such data. With the copy, a
        session reports that reply instead of a bare disconnect.
        """
        assert self._smtp is not None
        assert self._smtp.protocol is not None
        protocol = self._smtp.protocol
        original = protocol.data_received
        original_lost = protocol.connection_lost

        def data_received(data: bytes) -> None:
            self._wire.extend(data)
            self._arrived.set()
            original(data)

        def connection_lost(exc: Exception | None) -> None:
            self._arrived.set()
            original_lost(exc)

        setattr(protocol, "data_received", data_received)  # noqa: B010
        setattr(protocol, "connection_lost", connection_lost)  # noqa: B010

    def _take_reply(self) -> bytes | None:
        """Remove the first complete reply from the stream copy and return it, if there is one."""
        offset = 0
        while (end := self._wire.find(b"\n", offset)) != -1:
            line = self._wire[offset:end]
            offset = end + 1
            if line[3:4] != b"-":
                taken = bytes(self._wire[:offset])
                del self._wire[:offset]
                return taken
        return None

    def _unsolicited_reply(self, stage: SmtpStage) -> SmtpReply | None:
        """A complete reply the server sent unasked, if any."""
        raw = self._take_reply()
        if raw is None:
            return None
        lines = raw.decode("utf-8", errors="replace").replace("\r", "").splitlines()
        head = lines[-1][:3]
        if not head.isdigit():
            return None
        message = "\n".join(line[4:] for line in lines)
        return _reply(stage, int(head), message, time.perf_counter())

    async def _execute(
        self, stage: SmtpStage, *args: bytes, limit: float | None = None
    ) -> SmtpReply:
        if self._smtp is None or not self._smtp.is_connected:
            raise SmtpDisconnectedError(stage, "the session is not connected")
        start = time.perf_counter()
        try:
            response = await self._smtp.execute_command(
                *args, timeout=limit or self.timeouts.command
            )
        except aiosmtplib.SMTPTimeoutError:
            raise SmtpTimeoutError(stage, "no reply in time") from None
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise SmtpDisconnectedError(stage, str(exc)) from None
        except aiosmtplib.SMTPResponseException as exc:
            self._smtp.close()
            raise SmtpProtocolError(stage, exc.message) from None
        self._take_reply()
        return _reply(stage, response.code, response.message, start)


def _rcpt_arg(address: str) -> bytes:
    return b"TO:<" + encode_path(address, "recipient") + b">"


def _ok(reply: SmtpReply) -> bool:
    return reply.code is not None and reply.code < 400


def _parse_raw(stage: SmtpStage, raw: bytes, start: float) -> SmtpReply:
    """One complete reply (possibly multi-line) from the stream copy."""
    lines = raw.decode("utf-8", errors="replace").replace("\r", "").splitlines()
    head = lines[-1][:3] if lines else ""
    if not head.isdigit():
        raise SmtpProtocolError(stage, f"not an SMTP reply: {raw[:80]!r}")
    return _reply(stage, int(head), "\n".join(line[4:].strip() for line in lines), start)


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _reply(stage: SmtpStage, code: int, message: str, start: float) -> SmtpReply:
    return SmtpReply(
        stage=stage,
        code=code if 200 <= code <= 599 else None,
        enhanced_code=parse_enhanced_code(message),
        message=message,
        elapsed_ms=_ms_since(start),
    )
