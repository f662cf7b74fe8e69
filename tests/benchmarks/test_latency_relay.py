"""The latency relay: delay both ways, order, concurrency, half-close, shutdown and its counters.

No timing assertions: the relay's clock and sleep are injected, so a test holds a chunk in its
delay and looks at what has (not) been delivered, or counts what the relay scheduled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks._latency_relay import (
    Counters,
    LatencyRelay,
    RelayError,
    RelayProcess,
    RoundTrips,
    _parse_route,
    max_overlap,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HOST = "127.0.0.1"


class GatedSleep:
    """A sleep the test releases by hand: each call waits on a future the test can see."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.pending: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self.open = False  # once open, sleeps return at once

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.open:
            return
        gate = asyncio.get_running_loop().create_future()
        self.pending.put_nowait(gate)
        await gate

    async def next(self) -> asyncio.Future[None]:
        """The next sleep that is waiting (bounded, so a bug fails instead of hanging)."""
        async with asyncio.timeout(10):
            return await self.pending.get()


def frozen_clock() -> float:
    return 1000.0


async def settled(relay: LatencyRelay, count: int) -> None:
    """Wait (bounded) until ``count`` connections are open at the relay."""
    async with asyncio.timeout(10):
        await relay.wait_open(count)


@contextlib.asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[tuple[str, int]]:
    """A real TCP server on loopback running ``handler`` per connection; ended with the test."""
    tasks: set[asyncio.Task[object]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (asyncio.CancelledError, ConnectionError):
            writer.transport.abort()

    server = await asyncio.start_server(run, HOST, 0)
    try:
        yield HOST, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def relay_to(
    target: tuple[str, int], rtt: float = 0.0, **kwargs: object
) -> AsyncIterator[tuple[LatencyRelay, tuple[str, int]]]:
    """A relay on a free loopback port in front of ``target``."""
    relay = LatencyRelay({(HOST, 0): target}, rtt=rtt, **kwargs)  # type: ignore[arg-type]
    async with relay:
        yield relay, next(iter(relay.listening))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo everything until EOF, then close."""
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()
    writer.close()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):
        return await reader.read()


# --- the round-trip rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ("", 0),
        ("s", 0),  # the banner
        ("sc", 0),  # a command with no reply yet
        ("scs", 1),
        ("scss", 1),  # a reply in two chunks
        ("sccs", 1),  # a burst in two writes (pipelining)
        ("scscs", 2),
        ("scsscsc", 2),
        ("cs", 1),  # the client speaks first
    ],
)
def test_round_trip_table(events: str, expected: int) -> None:
    rounds = RoundTrips()
    closed = []
    for event in events:
        if event == "c":
            rounds.client_bytes_written()
        else:
            closed.append(rounds.server_bytes_read())
    assert rounds.count == expected == sum(closed)


@given(st.lists(st.sampled_from("cs")))
def test_round_trips_are_client_bursts_answered(events: list[str]) -> None:
    rounds = RoundTrips()
    for event in events:
        rounds.client_bytes_written() if event == "c" else rounds.server_bytes_read()
    text = "".join(events)
    # Collapse runs: a round trip is every "c" run that is followed by an "s" run.
    runs = [ch for i, ch in enumerate(text) if i == 0 or text[i - 1] != ch]
    expected = sum(1 for i in range(len(runs) - 1) if runs[i] == "c")
    assert rounds.count == expected


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)).map(sorted), max_size=12))
def test_max_overlap_is_the_most_spans_over_one_instant(spans: list[list[int]]) -> None:
    # Brute force over half-integer instants: a span [a, b) covers t when a <= t < b.
    instants = [t + 0.5 for t in range(-1, 21)]
    expected = max((sum(1 for a, b in spans if a <= t < b) for t in instants), default=0)
    assert max_overlap((a, b) for a, b in spans) == expected


def test_max_overlap_edges() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0, 1), (1, 2)]) == 1  # one ends as the next starts
    assert max_overlap([(0, 2), (1, 3), (1, 1)]) == 2  # an empty span covers nothing


# --- delay -----------------------------------------------------------------------------------


async def test_each_direction_waits_its_half_rtt_before_delivery() -> None:
    received: list[bytes] = []

    async def ping_pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readexactly(4))
        writer.write(b"pong")
        await writer.drain()
        await reader.read()
        writer.close()

    sleep = GatedSleep()
    async with (
        upstream(ping_pong) as target,
        relay_to(target, rtt=0.2, clock=frozen_clock, sleep=sleep) as (relay, address),
    ):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"ping")
        gate = await sleep.next()
        # Half the RTT, scheduled from the chunk's arrival; the chunk is held in the relay.
        assert sleep.calls == pytest.approx([0.1])
        assert received == []  # held in the relay
        assert relay.counters.bytes_up == 0
        gate.set_result(None)
        gate = await sleep.next()  # the reply is held on the way back
        assert received == [b"ping"]
        assert sleep.calls == pytest.approx([0.1, 0.1])
        assert relay.counters.bytes_down == 0
        gate.set_result(None)
        async with asyncio.timeout(10):
            assert await reader.readexactly(4) == b"pong"
        assert relay.counters.bytes_down == 4
        sleep.open = True
        writer.close()


async def test_a_chunk_already_due_is_sent_without_sleeping() -> None:
    ticks = iter(range(0, 10_000, 10))  # every clock read is 10 s later than the one before
    sleep = GatedSleep()
    async with (
        upstream(echo) as target,
        relay_to(target, rtt=0.2, clock=lambda: float(next(ticks)), sleep=sleep) as (_, address),
    ):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"late")
        writer.write_eof()
        assert await read_all(reader) == b"late"
        writer.close()
    assert sleep.calls == []  # due at arrival + 0.1 s, written 10 s later: nothing to wait


async def test_zero_rtt_never_sleeps() -> None:
    sleep = GatedSleep()
    async with upstream(echo) as target, relay_to(target, sleep=sleep) as (_, address):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"x" * 100)
        writer.write_eof()
        assert await read_all(reader) == b"x" * 100
        writer.close()
    assert sleep.calls == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rtt"):
        LatencyRelay({}, rtt=-1)
    with pytest.raises(ValueError, match="chunk"):
        LatencyRelay({}, rtt=0, chunk=0)


# --- order, concurrency, half-close ----------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_order_is_kept_whatever_the_chunking(seed: int) -> None:
    rng = random.Random(seed)

    async def shuffling_sleep(_: float) -> None:
        for _ in range(rng.randint(0, 3)):  # let other tasks run in a different order each time
            await asyncio.sleep(0)

    pieces = [bytes([rng.randrange(256)]) * rng.randint(1, 50) for _ in range(300)]
    async with (
        upstream(echo) as target,
        relay_to(target, rtt=0.1, clock=frozen_clock, sleep=shuffling_sleep, chunk=7) as (
            relay,
            address,
        ),
    ):
        reader, writer = await asyncio.open_connection(*address)

        async def send() -> None:
            for piece in pieces:
                writer.write(piece)
                if rng.random() < 0.3:
                    await writer.drain()
            writer.write_eof()

        _, echoed = await asyncio.gather(send(), read_all(reader))
        assert echoed == b"".join(pieces)
        writer.close()
        total = sum(len(p) for p in pieces)
        assert (relay.counters.bytes_up, relay.counters.bytes_down) == (total, total)


async def test_many_connections_wait_out_their_delays_at_the_same_time() -> None:
    sleep = GatedSleep()
    count = 40
    async with (
        upstream(echo) as target,
        relay_to(target, rtt=0.1, clock=frozen_clock, sleep=sleep) as (relay, address),
    ):
        streams = [await asyncio.open_connection(*address) for _ in range(count)]
        for index, (_, writer) in enumerate(streams):
            writer.write(f"{index:04d}".encode())
        # Every connection's first chunk is in its delay at once: none waits for another.
        gates = [await sleep.next() for _ in range(count)]
        assert relay.open == count
        assert relay.counters.max_open == count
        assert relay.counters.bytes_up == 0
        sleep.open = True
        for gate in gates:
            gate.set_result(None)
        for index, (reader, writer) in enumerate(streams):
            async with asyncio.timeout(10):
                assert await reader.readexactly(4) == f"{index:04d}".encode()
            writer.close()
        await settled(relay, 0)
        counters = relay.take()
        assert counters.connections == count
        assert counters.max_open == count
        assert counters.round_trips == count


async def test_client_half_close_reaches_the_server_and_the_reply_comes_back() -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # returns only at the client's EOF
        writer.write(b"bye:" + data)
        writer.close()

    sleep = GatedSleep()
    sleep.open = True
    async with (
        upstream(answer_after_eof) as target,
        relay_to(target, rtt=0.1, clock=frozen_clock, sleep=sleep) as (relay, address),
    ):
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"hello")
        writer.write_eof()
        assert await read_all(reader) == b"bye:hello"
        writer.close()
        await settled(relay, 0)


async def test_server_half_close_leaves_the_client_side_open() -> None:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def banner_then_listen(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"220 bye\r\n")
        writer.write_eof()  # the server has said all it will say
        got.set_result(await reader.read())
        writer.close()

    async with upstream(banner_then_listen) as target, relay_to(target) as (relay, address):
        reader, writer = await asyncio.open_connection(*address)
        assert await read_all(reader) == b"220 bye\r\n"  # the server's EOF came through
        writer.write(b"still here")
        writer.write_eof()
        async with asyncio.timeout(10):
            assert await got == b"still here"
        writer.close()
        await settled(relay, 0)


# --- shutdown and failures -------------------------------------------------------------------


async def test_closing_the_relay_drops_every_connection_both_ways() -> None:
    server_ends: asyncio.Queue[bytes | str] = asyncio.Queue()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            server_ends.put_nowait(await reader.read())
        except ConnectionResetError:
            server_ends.put_nowait("reset")
        writer.close()

    sleep = GatedSleep()
    async with upstream(hold) as target:
        relay = await LatencyRelay(
            {(HOST, 0): target}, rtt=0.1, clock=frozen_clock, sleep=sleep
        ).start()
        address = next(iter(relay.listening))
        streams = [await asyncio.open_connection(*address) for _ in range(3)]
        streams[0][1].write(b"held in the delay")
        await sleep.next()
        await settled(relay, 3)
        await relay.close()
        assert relay.open == 0
        for reader, writer in streams:
            with contextlib.suppress(ConnectionResetError):
                assert await read_all(reader) == b""
            writer.close()
        async with asyncio.timeout(10):
            ends = [await server_ends.get() for _ in range(3)]
        assert b"held in the delay" not in ends  # dropped, not flushed
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*address)


async def test_unreachable_upstream_closes_the_client_and_is_counted() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        closed_port = probe.getsockname()[1]  # nothing listens here once the socket closes
    async with relay_to((HOST, closed_port)) as (relay, address):
        reader, writer = await asyncio.open_connection(*address)
        with contextlib.suppress(ConnectionResetError):
            assert await read_all(reader) == b""
        writer.close()
        await settled(relay, 0)
        assert relay.take() == Counters(connections=1, max_open=1, upstream_failures=1)


async def test_listening_on_a_taken_address_is_a_typed_error() -> None:
    async with upstream(echo) as target:
        with pytest.raises(RelayError, match="cannot listen"):
            await LatencyRelay({target: target}, rtt=0).start()


# --- counters --------------------------------------------------------------------------------


async def test_counters_follow_an_smtp_like_conversation() -> None:
    async def smtp_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")  # banner: no round trip
        await reader.readline()  # EHLO
        writer.write(b"250 ok\r\n")
        await writer.drain()
        writer.write(b"250 more\r\n")  # a second chunk of the same answer
        await writer.drain()
        for _ in range(3):  # MAIL, RCPT, RCPT pipelined in one write
            await reader.readline()
        writer.write(b"250 a\r\n250 b\r\n550 c\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        writer.close()

    up = [b"EHLO x\r\n", b"MAIL FROM:<>\r\nRCPT TO:<a>\r\nRCPT TO:<b>\r\n", b"QUIT\r\n"]
    down = [
        b"220 hi\r\n",
        b"250 ok\r\n250 more\r\n",
        b"250 a\r\n250 b\r\n550 c\r\n",
        b"221 bye\r\n",
    ]
    async with upstream(smtp_like) as target, relay_to(target) as (relay, address):
        reader, writer = await asyncio.open_connection(*address)
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(down[0])) == down[0]
            for command, reply in zip(up, down[1:], strict=True):
                writer.write(command)
                assert await reader.readexactly(len(reply)) == reply
            assert await reader.read() == b""
        writer.close()
        await settled(relay, 0)
        counters = relay.take()
        assert counters == Counters(
            connections=1,
            max_open=1,
            max_active=1,
            round_trips=3,
            bytes_up=sum(map(len, up)),
            bytes_down=sum(map(len, down)),
        )
        assert relay.take() == Counters()  # a new window


async def test_a_window_starts_with_the_connections_still_open() -> None:
    async with upstream(echo) as target, relay_to(target) as (relay, address):
        streams = [await asyncio.open_connection(*address) for _ in range(2)]
        await settled(relay, 2)
        assert relay.take().connections == 2
        # Open (and still active: nothing said yet, but no EOF), though accepted in the last window.
        assert relay.take() == Counters(max_open=2, max_active=2)
        for _, writer in streams:
            writer.close()


# --- the relay as a process ------------------------------------------------------------------


async def test_relay_process_relays_and_reports_its_counters() -> None:
    async with upstream(echo) as target:
        with RelayProcess({(HOST, 0): target}, rtt=0.0) as relay:
            (address,) = relay.listening
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"ping")
            async with asyncio.timeout(10):
                assert await reader.readexactly(4) == b"ping"
            writer.close()
            # In a thread: the echo server in this loop must see the close and close its side.
            assert await asyncio.to_thread(relay.wait_idle, 10) == 0
            counters = relay.take()
            assert (counters.connections, counters.max_open, counters.round_trips) == (1, 1, 1)
            assert (counters.bytes_up, counters.bytes_down) == (4, 4)
        with pytest.raises(RelayError, match="not started"):
            relay.take()
        with pytest.raises(RelayError, match="not started"):
            relay.wait_idle(1)


def test_relay_process_that_cannot_listen_is_a_typed_error() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RelayError, match="did not start"):
            RelayProcess({(HOST, port): (HOST, port)}, rtt=0).start()


@pytest.mark.parametrize("text", ["127.0.0.1:25", "a=b", "127.0.0.1:x=127.0.0.1:25", ":25=h:1"])
def test_bad_routes_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _parse_route(text)


def test_route_parses() -> None:
    assert _parse_route("127.1.2.200:25=127.1.2.101:25") == (
        ("127.1.2.200", 25),
        ("127.1.2.101", 25),
    )


async def test_open_counts_what_the_client_holds_not_the_upstream_teardown() -> None:
    release = asyncio.Event()

    async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # the client's EOF ...
        await release.wait()  # ... but the server side stays up a while
        writer.close()

    async with upstream(linger) as target, relay_to(target) as (relay, address):
        for _ in range(5):  # one connection after another, each closed before the next
            _, writer = await asyncio.open_connection(*address)
            writer.close()
            await writer.wait_closed()
        assert relay.open >= 1  # server sides still lingering
        release.set()
        await settled(relay, 0)
        counters = relay.take()
        assert counters.connections == 5
        assert counters.max_open == 1


async def test_active_ends_at_the_clients_last_byte_open_at_its_eof() -> None:
    now = [0.0]
    release = asyncio.Event()

    async def reply_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"ok")
        await writer.drain()
        await release.wait()
        writer.close()

    async with (
        upstream(reply_then_wait) as target,
        relay_to(target, clock=lambda: now[0]) as (relay, address),
    ):
        first_r, first_w = await asyncio.open_connection(*address)
        await settled(relay, 1)
        now[0] = 1.0
        first_w.write(b"QUIT")  # the first client's last word at t=1 ...
        assert await first_r.readexactly(2) == b"ok"
        now[0] = 2.0
        second_r, second_w = await asyncio.open_connection(*address)  # ... the second opens at t=2
        await settled(relay, 2)
        now[0] = 3.0
        first_w.close()  # ... and the first closes its side only at t=3
        await first_w.wait_closed()
        second_w.write(b"QUIT")
        assert await second_r.readexactly(2) == b"ok"
        second_w.close()
        await second_w.wait_closed()
        release.set()
        await settled(relay, 0)
        counters = relay.take()
        assert (counters.max_open, counters.max_active) == (2, 1)
