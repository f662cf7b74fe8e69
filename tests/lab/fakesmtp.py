"""A small aiosmtpd MX for the replies Postfix cannot be made to give on loopback.

Blocklist refusals with Spamhaus text, ``452 4.5.3`` after N recipients, ``421`` in the middle of
a session, a slow or refusing banner and non-SMTP garbage. It runs its own event loop in a thread
so tests on any loop can talk to it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

SPAMHAUS_REPLY = (
    "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org;"
    " https://www.spamhaus.org/query/ip/{ip}"
)


@dataclass
class Behaviour:
    """What the fake MX does; every field off means a plain accepting server."""

    banner_delay: float = 0.0  # seconds before the 220 greeting
    banner: str | None = None  # replaces the greeting and closes (e.g. "554 ..." or garbage)
    hangup_at_banner: bool = False  # accept the connection, then close it without a word
    ehlo_reply: str | None = None  # replaces the EHLO reply (HELO still works); may be multi-line
    helo_reply: str | None = None  # replaces the HELO reply
    rcpt_delay: float = 0.0  # seconds before each RCPT reply
    rcpt_reply: str | None = None  # fixed reply to every RCPT ("{ip}" = client address)
    known_users: frozenset[str] | None = None  # None: accept all; else 550 5.1.1 for others
    max_recipients: int | None = None  # 452 4.5.3 once a transaction has this many
    disconnect_after_rcpts: int | None = None  # 421 and hang up at RCPT number N+1
    hostname: str = "mx.fake.test"
    received: list[str] = field(default_factory=list)  # every RCPT address seen
    connections: int = 0  # open now
    peak_connections: int = 0  # the most open at once


class _Handler:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.rcpts_per_connection: dict[int, int] = {}

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.behaviour.ehlo_reply is not None:
            return [self.behaviour.ehlo_reply]
        return responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        if self.behaviour.helo_reply is not None:
            return self.behaviour.helo_reply
        session.host_name = hostname
        return f"250 {self.behaviour.hostname}"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        b = self.behaviour
        b.received.append(address)
        if b.rcpt_delay:
            await asyncio.sleep(b.rcpt_delay)
        count = self.rcpts_per_connection.get(id(session), 0) + 1
        self.rcpts_per_connection[id(session)] = count
        if b.disconnect_after_rcpts is not None and count > b.disconnect_after_rcpts:
            transport = server.transport
            if transport is not None:
                asyncio.get_running_loop().call_soon(transport.close)
            return f"421 4.7.0 {b.hostname} Error: too many errors"
        if b.rcpt_reply is not None:
            return b.rcpt_reply.format(ip=session.peer[0])
        if b.max_recipients is not None and len(envelope.rcpt_tos) >= b.max_recipients:
            return "452 4.5.3 Error: too many recipients"
        if b.known_users is not None and address.lower() not in b.known_users:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"


class _FakeSMTP(SMTP):
    def __init__(self, behaviour: Behaviour, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.behaviour = behaviour

    async def _handle_client(self) -> None:
        behaviour = self.behaviour
        behaviour.connections += 1
        behaviour.peak_connections = max(behaviour.peak_connections, behaviour.connections)
        try:
            await self._serve_client()
        finally:
            behaviour.connections -= 1

    async def _serve_client(self) -> None:
        if self.behaviour.banner_delay:
            await asyncio.sleep(self.behaviour.banner_delay)
        if self.behaviour.hangup_at_banner:
            if self.transport is not None:
                self.transport.close()
            return
        if self.behaviour.banner is not None:
            await self.push(self.behaviour.banner)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()


class FakeSmtpServer:
    """``with FakeSmtpServer("127.0.0.1", Behaviour(...)) as fake: fake.port``; a free port is chosen."""

    def __init__(self, host: str, behaviour: Behaviour, port: int = 0) -> None:
        self.host = host
        self.behaviour = behaviour
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        handler = _Handler(self.behaviour)
        connections: list[_FakeSMTP] = []

        def factory() -> _FakeSMTP:
            protocol = _FakeSMTP(
                self.behaviour,
                handler,
                hostname=self.behaviour.hostname,
                ident="ESMTP fake",
                loop=loop,
            )
            connections.append(protocol)
            return protocol

        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            self._server = loop.run_until_complete(loop.create_server(factory, sock=sock))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for protocol in connections:
                if protocol.transport is not None:
                    protocol.transport.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.run_until_complete(asyncio.sleep(0.01))
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def start(self) -> FakeSmtpServer:
        """Start serving in a background thread; raises what binding raised."""
        self._thread = threading.Thread(target=self._run, name="fakesmtp", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def fake_smtp(behaviour: Behaviour, host: str = "127.0.0.1") -> Iterator[FakeSmtpServer]:
    """A running fake MX for the duration of the block."""
    server = FakeSmtpServer(host, behaviour)
    with server:
        yield server


@contextmanager
def full_backlog(host: str = "127.0.0.1") -> Iterator[int]:
    """A port whose accept queue is full, so a new TCP connect hangs until the client times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler = socket.create_connection((host, port), timeout=2)
        try:
            yield port
        finally:
            filler.close()
