"""One SMTP probing session: connect, banner, EHLO, STARTTLS, MAIL, RCPT, RSET, QUIT.

The thin I/O edge of the SMTP engine: it moves bytes between an asyncio stream and the sans-I/O
wire (:mod:`emailintel.smtp.wire`). SMTP replies are returned, never raised; only failures that
leave no reply to report (connect refused, timeout, TLS failure, lost connection, bytes that are
no reply) raise a typed :class:`SmtpSessionError` that names the stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import Final, Literal, Self

from emailintel.errors import ConfigError, EmailIntelError, SmtpWireError
from emailintel.models import SmtpReply, SmtpStage
from emailintel.smtp import wire
from emailintel.smtp.tlssessions import TlsSessionCache
from emailintel.smtp.wire import Reply, ReplyBuffer, encode_path

__all__ = [
    "SmtpConnectError",
    "SmtpDisconnectedError",
    "SmtpProtocolError",
    "SmtpSession",
    "SmtpSessionError",
    "SmtpTLSError",
    "SmtpTimeoutError",
    "StartTlsMode",
    "Timeouts",
    "encode_path",
    "probe_tls_context",
    "shared_tls_sessions",
]

StartTlsMode = Literal["opportunistic", "required", "never"]

_READ: Final = 65_536  # bytes asked of the stream per read
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


@cache
def shared_tls_sessions() -> TlsSessionCache:
    """The TLS session cache sessions use when given none (one per process, bounded)."""
    return TlsSessionCache()


def _check_ip(host_ip: str) -> str:
    try:
        return str(ipaddress.ip_address(host_ip))
    except ValueError:
        # A host name here would be resolved by the system resolver, outside our DNS control.
        raise ConfigError(f"SmtpSession needs an IP address, got {host_ip!r}") from None


class SmtpSession:
    """``async with SmtpSession(ip, server_hostname=mx, helo=fqdn) as s: await s.rcpt(addr)``.

    ``tls_sessions`` keeps the TLS session of each STARTTLS per (MX host, port) so the next
    connection to that MX resumes it (default: :func:`shared_tls_sessions`).
    """

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
        tls_sessions: TlsSessionCache | None = None,
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
        self.tls_sessions = tls_sessions if tls_sessions is not None else shared_tls_sessions()
        self.source_address = _check_ip(source_address) if source_address else None
        self._sock = sock
        self._opened = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = ReplyBuffer()
        self._replies: deque[Reply] = deque()  # complete replies read but not yet taken
        self._eof = False  # the server closed its side
        self._read_full = False  # the last read filled its buffer: the stream may hold more
        self._closed = False  # we dropped the connection
        self.banner: SmtpReply | None = None
        self.ehlo_reply: SmtpReply | None = None
        self.starttls_reply: SmtpReply | None = None
        self.refusal: SmtpReply | None = None
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.tls_resumed = False
        self.timings_ms: dict[str, float] = {}

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
        return (
            self.refusal is None
            and self._writer is not None
            and not self._closed
            and not self._eof
            and not self._writer.is_closing()
        )

    async def open(self) -> None:
        """Connect, read the banner, EHLO (HELO fallback) and STARTTLS as configured."""
        if self._opened:
            raise ConfigError("session already opened")
        self._opened = True
        sock = self._sock = self._sock or await self._connect()
        try:
            _no_delay(sock)
            self._reader, self._writer = await asyncio.open_connection(sock=sock)
        except OSError as exc:
            sock.close()
            raise SmtpConnectError("connect", f"{self.host_ip}:{self.port}: {exc}") from None
        try:
            await self._read_banner()
            if self.refusal is None:
                await self._greet()
            if self.refusal is None and self.starttls_mode != "never":
                await self._starttls()
        except BaseException:
            self._abort()
            raise

    async def close(self) -> None:
        """Send QUIT if still connected and drop the connection at once.

        No wait for the 221 nor for a TLS close_notify: the QUIT is already on its way when the
        transport is aborted, and not waiting saves a round trip per session.
        """
        if self.connected and self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write(wire.quit())
        self._abort()

    async def quit(self) -> SmtpReply:
        """Send QUIT, read the server's reply, then drop the connection (no TLS close_notify)."""
        try:
            return await self._command("quit", wire.quit())
        finally:
            self._abort()

    def _abort(self) -> None:
        """Drop the connection now, keeping the TLS session for the next connection to this MX."""
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            if self._sock is not None:
                self._sock.close()
            return
        if self.tls:
            ssl_object = self._writer.get_extra_info("ssl_object")
            if isinstance(ssl_object, ssl.SSLObject):
                self.tls_sessions.put(
                    self._tls_host, self.port, self.tls_context, ssl_object.session
                )
        # The transport owns the socket from open_connection() on and closes it itself.
        self._writer.transport.abort()

    @property
    def _tls_host(self) -> str:
        return self.server_hostname or self.host_ip

    async def _connect(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host_ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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

    # --- reading replies -------------------------------------------------------------------------

    async def _next_reply(self, stage: SmtpStage) -> Reply:
        """The next complete reply, reading from the stream as needed (no time limit here)."""
        assert self._reader is not None
        while not self._replies:
            if self._eof or self._closed:
                raise SmtpDisconnectedError(stage, "the server closed the connection")
            try:
                data = await self._reader.read(_READ)
            except OSError as exc:
                self._eof = True
                raise SmtpDisconnectedError(stage, f"connection lost: {exc}") from None
            if not data:
                self._eof = True
                continue
            self._read_full = len(data) == _READ
            try:
                self._replies.extend(self._buffer.feed(data))
            except SmtpWireError as exc:
                self._abort()
                raise SmtpProtocolError(stage, str(exc)) from None
        return self._replies.popleft()

    async def _read(self, stage: SmtpStage) -> Reply:
        """One reply within the command time limit; a timeout drops the connection."""
        try:
            async with asyncio.timeout(self.timeouts.command):
                return await self._next_reply(stage)
        except TimeoutError:
            self._abort()
            raise SmtpTimeoutError(stage, "no reply in time") from None

    def _write(self, stage: SmtpStage, data: bytes) -> None:
        if not self.connected or self._writer is None:
            raise SmtpDisconnectedError(stage, "the session is not connected")
        try:
            self._writer.write(data)
        except (OSError, RuntimeError) as exc:
            raise SmtpDisconnectedError(stage, f"cannot write: {exc}") from None

    async def _read_banner(self) -> None:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeouts.banner):
                reply = await self._next_reply("banner")
        except TimeoutError:
            raise SmtpTimeoutError("banner", "no greeting in time") from None
        except SmtpDisconnectedError:
            raise SmtpDisconnectedError("banner", "closed before the greeting") from None
        self.timings_ms["banner"] = _ms_since(start)
        self.banner = _reply("banner", reply, start)
        if reply.code != 220:
            self.refusal = self.banner

    async def _greet(self) -> None:
        raw, reply = await self._exchange_raw("ehlo", wire.ehlo(self.helo))
        if reply.code != 250 and reply.code != 421 and self.connected:
            reply = await self._exchange("ehlo", wire.helo(self.helo))
            self.extensions = {}
        elif reply.code == 250:
            self.extensions = wire.parse_extensions(raw)
        self.timings_ms["ehlo"] = self.timings_ms.get("ehlo", 0.0) + (reply.elapsed_ms or 0.0)
        self.ehlo_reply = reply
        if reply.code != 250:
            self.refusal = reply

    async def _exchange(self, stage: SmtpStage, line: bytes) -> SmtpReply:
        """Write one command and read its reply."""
        return (await self._exchange_raw(stage, line))[1]

    async def _exchange_raw(self, stage: SmtpStage, line: bytes) -> tuple[Reply, SmtpReply]:
        """Write one command and read its reply, as the wire parsed it and as reported."""
        start = time.perf_counter()
        self._write(stage, line)
        raw = await self._read(stage)
        return raw, _reply(stage, raw, start)

    async def _starttls(self) -> None:
        if "starttls" not in self.extensions:
            if self.starttls_mode == "required":
                raise SmtpTLSError("starttls", "the server does not offer STARTTLS")
            return
        start = time.perf_counter()
        reply = await self._exchange("starttls", wire.starttls())
        self.starttls_reply = reply
        if reply.code != 220:
            if reply.code == 421 or not self.connected:
                self._refused(reply)
            elif self.starttls_mode == "required":
                raise SmtpTLSError("starttls", f"refused: {reply.code} {reply.message}")
            return
        if self._replies or self._buffer.pending or self._read_full:
            # Bytes sent before the handshake must not pass for replies inside TLS (RFC 3207 §6).
            # No loop iteration runs between the read that brought the 220 and start_tls pausing
            # reads, so whatever came with the 220 is in hand here (unless the read was full).
            raise SmtpProtocolError("starttls", "the server sent more after its 220 to STARTTLS")
        await self._handshake()
        self.tls = True
        self.timings_ms["starttls"] = _ms_since(start)
        await self._greet()

    async def _handshake(self) -> None:
        assert self._writer is not None
        host = self._tls_host
        context = self.tls_sessions.context_for(host, self.port, self.tls_context)
        try:
            async with asyncio.timeout(self.timeouts.command):
                await self._writer.start_tls(context, server_hostname=self.server_hostname)
        except TimeoutError:
            raise SmtpTimeoutError("starttls", "TLS handshake timed out") from None
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.tls_sessions.discard(host, self.port)
            raise SmtpTLSError("starttls", f"TLS handshake failed: {exc}") from None
        ssl_object = self._writer.get_extra_info("ssl_object")
        self.tls_resumed = isinstance(ssl_object, ssl.SSLObject) and ssl_object.session_reused

    # --- commands --------------------------------------------------------------------------------

    async def mail_from(self, sender: str = "", *, smtputf8: bool | None = None) -> SmtpReply:
        """``MAIL FROM:<sender>`` (empty = null sender). SMTPUTF8 is added for non-ASCII senders."""
        return await self._command("mail", self._mail_line(sender, smtputf8))

    def _mail_line(self, sender: str, smtputf8: bool | None) -> bytes:
        wants_utf8 = (not sender.isascii()) if smtputf8 is None else smtputf8
        params = ["SMTPUTF8"] if wants_utf8 and "smtputf8" in self.extensions else []
        return wire.mail_from(sender, params)

    async def rcpt(self, address: str) -> SmtpReply:
        """``RCPT TO:<address>``; the reply says what the server thinks of that mailbox."""
        return await self._command("rcpt", wire.rcpt_to(address))

    async def rcpt_many(self, addresses: Sequence[str]) -> list[SmtpReply]:
        """RCPT for each address; with PIPELINING all in one write, replies read in order.

        Without PIPELINING (or for one address) the commands go one at a time. If the server
        closes mid-batch, the replies received so far are returned (none: SmtpDisconnectedError).
        """
        lines = [wire.rcpt_to(address) for address in addresses]
        if not self.pipelining or len(addresses) < 2:
            return [await self._command("rcpt", line) for line in lines]
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
        setup = [wire.rset()] if reset else []
        setup.append(self._mail_line(sender, smtputf8))
        rcpts = [wire.rcpt_to(address) for address in addresses]
        if not self.pipelining:
            done: list[SmtpReply] = []
            if reset:
                done.append(await self.rset())
            if not done or _ok(done[-1]):
                done.append(await self._command("mail", setup[-1]))
            if len(done) < len(setup) or not _ok(done[-1]):
                return done, []
            return done, await self.rcpt_many(addresses)
        stages: list[SmtpStage] = ["rset"] if reset else []
        stages.append("mail")
        stages.extend("rcpt" for _ in rcpts)
        replies = await self._pipeline(stages, setup + rcpts)
        return replies[: len(setup)], replies[len(setup) :]

    async def rset(self) -> SmtpReply:
        """``RSET``: start a new transaction on the same connection."""
        return await self._command("rset", wire.rset())

    async def _pipeline(self, stages: Sequence[SmtpStage], lines: list[bytes]) -> list[SmtpReply]:
        """Write the commands at once and read their replies, in order."""
        stage, count = stages[0], len(lines)
        self._take_unsolicited(stage)
        if self.refusal is not None:
            return [self.refusal] * count
        start = time.perf_counter()
        self._write(stage, wire.pipeline(*lines))
        replies: list[SmtpReply] = []
        try:
            async with asyncio.timeout(self.timeouts.command):
                while len(replies) < count:
                    try:
                        raw = await self._next_reply(stages[len(replies)])
                    except SmtpDisconnectedError:
                        break
                    replies.append(_reply(stages[len(replies)], raw, start))
        except TimeoutError:
            self._abort()
            raise SmtpTimeoutError(stage, "no reply in time") from None
        for reply in replies:
            if reply.code == 421:
                self._refused(reply)
                break
        if not replies:
            raise SmtpDisconnectedError(stage, "closed during a pipelined batch")
        return replies

    async def _command(self, stage: SmtpStage, line: bytes) -> SmtpReply:
        """One command and its reply; a reply the server sent unasked is the answer instead."""
        self._take_unsolicited(stage)
        if self.refusal is not None:
            return self.refusal
        reply = await self._exchange(stage, line)
        if reply.code == 421:
            self._refused(reply)
        return reply

    def _take_unsolicited(self, stage: SmtpStage) -> None:
        """A reply read before its command was sent (Postfix's parting 421) ends the session."""
        if self.refusal is None and self._replies:
            reply = _reply(stage, self._replies.popleft(), time.perf_counter())
            if reply.code == 421:
                self._refused(reply)
            else:
                self.refusal = reply

    def _refused(self, reply: SmtpReply) -> None:
        """A 421: the server is closing the channel (RFC 5321 §3.8), so we close our side too."""
        self.refusal = reply
        self._abort()


def _no_delay(sock: socket.socket) -> None:
    """Turn Nagle off: asyncio only does for sockets made with proto=IPPROTO_TCP, and with it on
    a command written right after the TLS Finished waits for that to be acknowledged (~40 ms of
    delayed ACK)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _ok(reply: SmtpReply) -> bool:
    return reply.code is not None and reply.code < 400


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _reply(stage: SmtpStage, reply: Reply, start: float) -> SmtpReply:
    return SmtpReply(
        stage=stage,
        code=reply.code,
        enhanced_code=reply.enhanced_code,
        message=reply.message,
        elapsed_ms=_ms_since(start),
    )
