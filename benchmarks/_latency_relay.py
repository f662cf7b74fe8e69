"""A user-space TCP relay that adds network latency in front of the lab's MXes.

Every byte read from one side is written to the other half an RTT later: each chunk is scheduled
at its arrival time plus ``rtt / 2`` on a per-connection, per-direction FIFO, so order is kept,
bandwidth is unlimited (nothing waits for an earlier chunk's delay but its own schedule) and no
connection waits for another. EOF (half-close) and resets travel the same way, in order.

What it does not model: the TCP handshake (the relay accepts at once and opens the upstream
connection at once, so a new connection costs the banner's half RTT, not the 1.5 RTT of SYN,
SYN-ACK and ACK before it), loss and DNS (NSD stays on loopback). Both favour clients that open
many connections or look up much, i.e. the peers.

Counters, per measurement window (:meth:`LatencyRelay.take`): connections accepted, the most
open at once on the client's side (from accept until the client's EOF or reset reaches the relay:
what the client holds, not the upstream teardown half an RTT later), the most **active** at once
(from accept until the last byte the client sent before its EOF or reset: a client that has said
its last word, QUIT or TLS close_notify, and only waits for the server's close is not working
that connection any more), bytes each way, and round trips. A **round trip** is counted per connection when
the relay reads bytes from the server after it has written client bytes to the server since the
server last sent anything: a client write burst (one or many writes, however chunked) followed
by the server's reply. The banner, a reply arriving in several chunks and data the server sends
unprompted after a reply (e.g. TLS session tickets) are not round trips of their own; pipelined
commands answered together are one.

Run as a process (``python -m benchmarks._latency_relay --rtt-ms 100 --route
127.1.2.200:25=127.1.2.101:25 ...``): it prints one JSON line when listening, then answers each
``take`` line on stdin with the window's counters as a JSON line and each ``idle SECONDS`` line,
once no connection is open or after SECONDS, with ``{"open": n}``; EOF on stdin stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Address = tuple[str, int]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

CHUNK = 65536  # bytes read at once per direction; a read returns whatever has arrived
_EOF = b""  # queue marker: the sending side shut its write half
_RESET = None  # queue marker: the sending side's connection failed


class RelayError(RuntimeError):
    """The relay could not start, or its process did not answer as expected."""


@dataclass
class RoundTrips:
    """The round-trip rule of one connection, without I/O: feed it what the relay does."""

    count: int = 0
    _awaiting_reply: bool = False

    def client_bytes_written(self) -> None:
        """The relay wrote client bytes to the server: a reply from now on closes a round trip."""
        self._awaiting_reply = True

    def server_bytes_read(self) -> bool:
        """The relay read bytes from the server: True if that closed a round trip."""
        if not self._awaiting_reply:
            return False
        self.count += 1
        self._awaiting_reply = False
        return True


@dataclass
class Counters:
    """What the relay saw in one measurement window (all connections, all routes)."""

    connections: int = 0  # accepted
    max_open: int = 0  # most connections open at the same time, on the client's side
    max_active: int = 0  # most at once between accept and the client's last byte (see above)
    round_trips: int = 0
    bytes_up: int = 0  # client -> server, written
    bytes_down: int = 0  # server -> client, written
    upstream_failures: int = 0  # accepted, but the MX could not be reached

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON-ready dict."""
        return asdict(self)


@dataclass(eq=False)
class _Link:
    """One relayed connection: both sides' writers and its pump tasks."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    rounds: RoundTrips = field(default_factory=RoundTrips)
    client_open: bool = False  # from accept until the client's EOF or reset reaches the relay
    started: float = 0.0  # relay clock at accept
    last_client_byte: float = 0.0  # relay clock at the client's last chunk so far
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        """Drop both sides at once (no FIN: a reset, as a network failure looks)."""
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()

    async def close(self) -> None:
        """Close both sides after their buffered bytes are sent (both ends have seen EOF)."""
        for writer in (self.client, self.server):
            if writer is not None:
                writer.close()
        for writer in (self.client, self.server):
            if writer is not None:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def max_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """The most spans (start, end) covering one instant; a span ending when another starts does
    not overlap it."""
    events = sorted(e for start, end in spans for e in ((start, 1), (end, -1)))
    most = current = 0
    for _, step in events:  # at equal times the end (-1) sorts before the start (+1)
        current += step
        most = max(most, current)
    return most


class LatencyRelay:
    """``routes`` maps listen (host, port) to target (host, port); port 0 picks a free one.

    ``clock`` and ``sleep`` are injectable so tests can drive the schedule without real time.
    """

    def __init__(
        self,
        routes: Mapping[Address, Address],
        *,
        rtt: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        chunk: int = CHUNK,
    ) -> None:
        if rtt < 0:
            raise ValueError(f"rtt must not be negative, got {rtt!r}")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 byte, got {chunk!r}")
        self.routes = dict(routes)
        self.delay = rtt / 2
        self._clock = clock
        self._sleep = sleep
        self._chunk = chunk
        self._servers: list[asyncio.Server] = []
        self._links: set[_Link] = set()
        self._client_open = 0  # links whose client has not closed its side yet
        self._spans: list[tuple[float, float]] = []  # active spans that ended in this window
        self._handlers: set[asyncio.Task[Any]] = set()
        self._counters = Counters()
        self._changed = asyncio.Condition()  # notified when a connection opens or closes
        self.listening: dict[Address, Address] = {}  # bound (host, port) -> target

    @property
    def open(self) -> int:
        """Connections open right now."""
        return len(self._links)

    async def wait_open(self, count: int) -> None:
        """Return once exactly ``count`` connections are open (e.g. 0: all have closed)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._links) == count)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def counters(self) -> Counters:
        """The current window's counters (live; :meth:`take` to close the window)."""
        return self._counters

    def take(self) -> Counters:
        """The counters since the last call (or the start); a new window starts now."""
        open_spans = [(link.started, math.inf) for link in self._links if link.client_open]
        self._counters.max_active = max_overlap(self._spans + open_spans)
        taken, self._counters = self._counters, Counters(max_open=self._client_open)
        self._spans = []
        return taken

    async def start(self) -> LatencyRelay:
        """Listen on every route (closing what was opened if one cannot be bound)."""
        try:
            for (host, port), target in self.routes.items():
                server = await asyncio.start_server(
                    functools.partial(self._accept, target=target), host, port, backlog=512
                )
                self._servers.append(server)
                bound = server.sockets[0].getsockname()
                self.listening[(bound[0], bound[1])] = target
        except OSError as exc:
            await self.close()
            raise RelayError(f"cannot listen: {exc}") from exc
        return self

    async def close(self) -> None:
        """Stop listening and drop every open connection; returns when all is torn down."""
        for server in self._servers:
            server.close()
        for link in list(self._links):
            link.abort()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> LatencyRelay:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # --- one connection ------------------------------------------------------------------------

    async def _accept(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: Address
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        link = _Link(client_w)
        try:
            # Let closes that arrived with this connect be seen first: a client that closes one
            # connection and at once opens the next never has both open.
            await asyncio.sleep(0)
            self._links.add(link)
            self._counters.connections += 1
            link.client_open = True
            link.started = link.last_client_byte = self._clock()
            self._client_open += 1
            self._counters.max_open = max(self._counters.max_open, self._client_open)
            await self._notify()
            try:
                server_r, server_w = await asyncio.open_connection(*target)
            except OSError:
                self._counters.upstream_failures += 1
                link.abort()
                return
            link.server = server_w
            up: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
            down: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
            link.tasks = [
                asyncio.create_task(self._read(client_r, up, link, from_server=False)),
                asyncio.create_task(self._write(up, server_w, link, upward=True)),
                asyncio.create_task(self._read(server_r, down, link, from_server=True)),
                asyncio.create_task(self._write(down, client_w, link, upward=False)),
            ]
            await asyncio.gather(*link.tasks)
            await link.close()
        except asyncio.CancelledError:
            pass  # the relay is closing (only close() cancels this task); dropped below
        finally:
            for pump in link.tasks:
                pump.cancel()
            link.abort()
            self._client_closed(link)
            self._links.discard(link)
            self._handlers.discard(task)
            await self._notify()

    def _client_closed(self, link: _Link) -> None:
        if link.client_open:
            self._spans.append((link.started, link.last_client_byte))
            link.client_open = False
            self._client_open -= 1

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        link: _Link,
        *,
        from_server: bool,
    ) -> None:
        """Read chunks as they arrive and schedule each at arrival + delay (EOF, reset alike)."""
        while True:
            try:
                data = await reader.read(self._chunk)
            except OSError:
                data = None
            if from_server and data and link.rounds.server_bytes_read():
                self._counters.round_trips += 1
            elif data and not from_server:
                link.last_client_byte = self._clock()
            if not data and not from_server:
                self._client_closed(link)  # the client holds no connection from here on
            queue.put_nowait((self._clock() + self.delay, _RESET if data is None else data))
            if not data:
                return

    async def _write(
        self,
        queue: asyncio.Queue[tuple[float, bytes | None]],
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        upward: bool,
    ) -> None:
        """Write each chunk at its due time, in order; pass EOF on, or reset everything."""
        while True:
            due, data = await queue.get()
            wait = due - self._clock()
            if wait > 0:
                await self._sleep(wait)
            if data is _RESET:
                link.abort()
                return
            try:
                if data == _EOF:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                if upward:
                    link.rounds.client_bytes_written()
                    self._counters.bytes_up += len(data)
                else:
                    self._counters.bytes_down += len(data)
                await writer.drain()
            except OSError:
                link.abort()
                return


# --- the relay as a process, and its handle --------------------------------------------------


def _parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _parse_route(text: str) -> tuple[Address, Address]:
    listen, sep, target = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected listen=target, got {text!r}")
    return _parse_address(listen), _parse_address(target)


async def _serve(routes: Mapping[Address, Address], rtt: float) -> None:
    relay = await LatencyRelay(routes, rtt=rtt).start()
    try:
        print(json.dumps({"listening": [f"{h}:{p}" for h, p in relay.listening]}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command = line.strip()
            if not line or command == "quit":
                return
            if command == "take":
                print(json.dumps(relay.take().as_dict()), flush=True)
            elif command.startswith("idle "):
                with contextlib.suppress(TimeoutError, ValueError):
                    async with asyncio.timeout(float(command.split()[1])):
                        await relay.wait_open(0)
                print(json.dumps({"open": relay.open}), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    finally:
        await relay.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: relay the given routes until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--route", type=_parse_route, action="append", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(dict(args.route), args.rtt_ms / 1e3))
    except RelayError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(2)


class RelayProcess:
    """The relay in a process of its own (so it does not share a core's GIL with a client)."""

    def __init__(self, routes: Mapping[Address, Address], *, rtt: float) -> None:
        self.routes = dict(routes)
        self.rtt = rtt
        self._proc: subprocess.Popen[str] | None = None
        self.listening: list[Address] = []  # as bound (port 0 in a route picks a free one)

    def start(self) -> RelayProcess:
        """Start the process and wait until it listens on every route."""
        command = [sys.executable, "-m", "benchmarks._latency_relay", f"--rtt-ms={self.rtt * 1e3}"]
        for (lh, lp), (th, tp) in self.routes.items():
            command.append(f"--route={lh}:{lp}={th}:{tp}")
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        answer = self._answer()
        if "listening" not in answer:
            self.stop()
            raise RelayError(f"relay did not start: {answer}")
        self.listening = [_parse_address(a) for a in answer["listening"]]
        return self

    def _answer(self) -> dict[str, Any]:
        if self._proc is None or self._proc.stdout is None:
            raise RelayError("relay not started")
        line = self._proc.stdout.readline()
        if not line:
            raise RelayError(f"relay exited ({self._proc.poll()})")
        try:
            answer: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise RelayError(f"relay printed {line[:200]!r}") from None
        return answer

    def _ask(self, command: str) -> dict[str, Any]:
        if self._proc is None or self._proc.stdin is None:
            raise RelayError("relay not started")
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._answer()

    def wait_idle(self, seconds: float) -> int:
        """Wait until no connection is open at the relay, at most ``seconds``; how many still are."""
        answer = self._ask(f"idle {seconds}")
        if not isinstance(answer.get("open"), int):
            raise RelayError(f"relay answered {answer}")
        return int(answer["open"])

    def take(self) -> Counters:
        """The relay's counters since the last take (a new window starts)."""
        answer = self._ask("take")
        try:
            return Counters(**answer)
        except TypeError:
            raise RelayError(f"relay answered {answer}") from None

    def stop(self) -> None:
        """Close stdin (the relay drops every connection and exits) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
