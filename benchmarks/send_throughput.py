"""BaviMail send benchmark: messages handed to Postfix per second through the outbox (its
bookkeeping on SQLite and on PostgreSQL) beside the raw ceiling (aiosmtplib sending the same
signed messages in a loop, no bookkeeping), printed as ratios.

Run: ``.venv/bin/python -m benchmarks.send_throughput [--messages 10000 --connections 4]``. It
starts the mail lab's Postfix (tests/lab/maillab.py) on 127.0.0.0/8 and delivers into a lab
Maildir. Every message is built and DKIM-signed once (not timed); each run then hands all of
them to Postfix: the outbox runs claim -> hand-off commit -> SMTP -> outcome commit per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import sqlalchemy as sa

from benchmarks._databases import fresh_database
from benchmarks._rate import Rate
from server.db.engine import Database
from server.db.models import MailMessage
from server.mail.message import Draft
from server.mail.outbox import MailRecord, Outbox
from server.mail.relay import Relay, RelayConfig
from server.mail.service import MailService
from server.mail.worker import MailWorker
from tests.lab.maillab import Listener, MailDomain, MailLab

USER = "bench"


class _Capture(Outbox):
    """An outbox that keeps the rows MailService would insert (to build them once)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def insert(  # type: ignore[override]
        self, row: Any, links: Any = (), conn: Any = None, caps: Any = None
    ) -> MailRecord:
        self.rows.append(dict(row))
        return None  # type: ignore[return-value]


@dataclass(frozen=True)
class _Identity:
    domain: str
    selector: str
    private_key_pem: bytes
    alias_display_name: str | None = None
    reply_to: str | None = None
    tracking: bool = False
    return_path: str | None = None


def _key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


async def build_rows(count: int) -> list[dict[str, Any]]:
    """``count`` signed messages to bench@inbox.test, as outbox rows."""
    pem = _key()

    async def identity(user_id: str, address: str) -> _Identity:
        return _Identity("acme.test", "bench", pem)

    capture = _Capture()
    mail = MailService(capture, identity=identity)
    for i in range(count):
        await mail.submit(
            "usr_bench",
            Draft(
                from_="Ann <ann@acme.test>",
                to=[f"{USER}@inbox.test"],
                subject=f"Quick question #{i}",
                text="Hi,\n\nA short note to measure the outbox.\n\nAnn\n",
                html="<p>Hi,</p><p>A short note to measure the outbox.</p><p>Ann</p>",
            ),
        )
    return capture.rows


async def raw_loop(rows: Sequence[dict[str, Any]], host: str, connections: int) -> Rate:
    """The ceiling: the same bytes over ``connections`` aiosmtplib connections, no bookkeeping."""
    shares = [rows[i::connections] for i in range(connections)]

    async def one(share: Sequence[dict[str, Any]]) -> None:
        smtp = aiosmtplib.SMTP(hostname=host, port=25, start_tls=False)
        await smtp.connect()
        for row in share:
            await smtp.sendmail(row["envelope_from"], row["recipients"], row["raw"])
        await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(one(s) for s in shares))
    return Rate("raw aiosmtplib loop", len(rows), time.perf_counter() - start)


def database(backend: str, work: Path) -> contextlib.AbstractContextManager[tuple[str, str | None]]:
    """A fresh database URL for ``backend`` (a PostgreSQL database is dropped afterwards)."""
    return fresh_database(backend, work, "send")


async def outbox_run(
    backend: str,
    rows: Sequence[dict[str, Any]],
    host: str,
    connections: int,
    work: Path,
    group: int = 1,
) -> Rate:
    """Insert the rows (not timed), then time a mail worker handing all of them to Postfix."""
    with database(backend, work) as (url, schema):
        db = Database(url, schema=schema)
        try:
            await db.migrate()
            table = MailMessage.__table__
            now = time.time()
            async with db.engine.begin() as conn:
                for start in range(0, len(rows), 500):
                    chunk = [
                        {**r, "next_attempt_at": now, "created_at": now}
                        for r in rows[start : start + 500]
                    ]
                    await conn.execute(sa.insert(table), chunk)
            outbox = Outbox(db)
            config = RelayConfig(host=host, starttls=False)
            worker = MailWorker(
                outbox,
                lambda: Relay(config),
                concurrency=connections,
                batch=100,
                poll_seconds=0.05,
                handoff_group=group,
            )
            start = time.perf_counter()
            async with worker:
                deadline = time.monotonic() + 3600  # a hang guard
                while (await outbox.count_by_state()).get("sent", 0) < len(rows):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{backend}: the worker stalled")
                    await asyncio.sleep(0.05)
            seconds = time.perf_counter() - start
            counts = await outbox.count_by_state()
            if counts != {"sent": len(rows)}:
                raise RuntimeError(f"{backend}: not every message was sent: {counts}")
            return Rate(f"outbox {backend} group={group}", len(rows), seconds)
        finally:
            await db.dispose()


def lab() -> MailLab:
    """Postfix delivering inbox.test into a Maildir, without in-flow delay."""
    return MailLab(
        listeners=[Listener("relay", "mx.relay.test", 2, profile="bench")],
        domains=[MailDomain("inbox.test", mx=("relay",), users=(USER,))],
    )


def format_table(results: Sequence[Rate]) -> str:
    """Messages/s of each run and its ratio to the raw loop."""
    ceiling = next((r.per_second for r in results if r.name.startswith("raw")), 0.0)
    lines = [f"{'run':<26} {'messages':>9} {'seconds':>9} {'msg/s':>9} {'vs raw':>8}"]
    for r in results:
        ratio = r.per_second / ceiling if ceiling else float("nan")
        lines.append(
            f"{r.name:<26} {r.messages:>9} {r.seconds:>9.2f} {r.per_second:>9.1f} {ratio:>8.2f}"
        )
    return "\n".join(lines)


async def run(
    messages: int, connections: int, backends: Sequence[str], groups: Sequence[int] = (1,)
) -> list[Rate]:
    """Build the messages, start the lab, run the raw loop and each backend's outbox."""
    print(f"building and signing {messages} messages ...", file=sys.stderr, flush=True)
    rows = await build_rows(messages)
    mail = lab()
    mail.start()
    try:
        host = mail.ip("relay")
        results = [await raw_loop(rows, host, connections)]
        with tempfile.TemporaryDirectory() as work:
            for backend in backends:
                for group in groups:
                    results.append(
                        await outbox_run(backend, rows, host, connections, Path(work), group)
                    )
        return results
    finally:
        mail.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections at once")
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--groups", nargs="+", type=int, default=[1, 10], help="messages handed off per commit"
    )
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.messages, args.connections, args.backends, args.groups))
    print(format_table(results))


if __name__ == "__main__":
    main()
