"""CPU the keyed layer adds per call, in process: keyed ``POST /api/v1/email-verification/validate``
(API key, plan, rate limit, 1 credit) beside the same validation on the unpaid
``POST /api/x402/v1/email/validate``, both driven straight through the ASGI app (no sockets, no
HTTP client), DNS from an in-memory stub.

    .venv/bin/python -m benchmarks.keyed_overhead                  # SQLite, 5 rounds x 500
    .venv/bin/python -m benchmarks.keyed_overhead --rounds 3 --calls 300 --profile keyed.prof
    .venv/bin/python -m benchmarks.keyed_overhead --backend postgresql   # BAVLIO_BENCH_PG
    PYTHONPATH=/other/checkout .venv/bin/python benchmarks/keyed_overhead.py   # that version

CPU time (``time.process_time``) rather than wall time, so a machine shared with other work
still gives comparable figures (the embedded job worker and webhook dispatcher are off: they
cost per second, not per call); rounds alternate open and keyed so drift hits both. Prints the
median per-call CPU of each mode and the difference (what the keyed layer costs). Run it on two
checkouts (``PYTHONPATH=...``) to compare versions; ``benchmarks.api_throughput`` is the end to
end measure over real sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
if str(ROOT) not in sys.path:  # last: run as a file against another checkout on PYTHONPATH
    sys.path.append(str(ROOT))

from lab.asgi import http_scope  # noqa: E402
from lab.stubdns import StubResolver  # noqa: E402  (the route tests' resolver)

__all__ = ["main", "run"]

KEYED_PATH = "/api/v1/email-verification/validate"
OPEN_PATH = "/api/x402/v1/email/validate"
JWT_SECRET = "b" * 40


class _Driver:
    """Calls an ASGI app with one request and collects status and body (no client library)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(
        self, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes]:
        scope = http_scope(method, path, len(body), headers)
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # never: no disconnect while the app answers
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def _app(work: Path, database_url: str | None) -> Any:
    from server.app import create_app
    from server.settings import load_settings

    settings = load_settings(
        env_file=None,
        database_url=database_url or f"sqlite:///{work / 'bench.sqlite3'}",
        jwt_secret=JWT_SECRET,
        secret_file=work / "bavlio.secret",
        storage_dir=work / "files",
        log_level="warning",
        plans={"bench": {"rate_limit": "100000000/minute"}},  # never the bottleneck
        # pollers cost CPU per second, not per call: left out so that slower (keyed) rounds
        # are not charged for more of them
        embedded_worker=False,
        webhooks_dispatch=False,
    )
    return create_app(settings, resolver=StubResolver())


async def _key(app: Any, driver: _Driver, credits: int) -> list[tuple[bytes, bytes]]:
    """A user on the bench plan with ``credits``, and its all-scopes API key's header."""
    from server.auth.sessions import issue_session_jwt
    from server.billing.credit_rules import EntryKind

    user = "bench-" + str(time.time_ns())
    token = issue_session_jwt(JWT_SECRET.encode(), user, email=f"{user}@x.test", plan="bench")
    session = [(b"authorization", f"Bearer {token}".encode())]
    status, me = await driver.call("GET", "/api/v1/auth/me", b"", session)
    assert status == 200, me
    await app.state.services.keyed.credits.add(
        json.loads(me)["user_id"], credits, kind=EntryKind.GRANT, reference=user, operation="grant"
    )
    body = json.dumps({"name": "bench", "scopes": ["*"]}).encode()
    status, made = await driver.call("POST", "/api/v1/api-keys", body, session)
    assert status == 201, made
    return [(b"authorization", f"Bearer {json.loads(made)['key']}".encode())]


async def _round(
    driver: _Driver, path: str, headers: list[tuple[bytes, bytes]], calls: int, offset: int
) -> float:
    """Per-call CPU seconds of ``calls`` sequential calls."""
    bodies = [
        json.dumps({"email": f"user{(offset + i) % 997}.name@acme.test"}).encode()
        for i in range(calls)
    ]
    start = time.process_time()
    for body in bodies:
        status, answer = await driver.call("POST", path, body, headers)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {answer[:200]!r}")
    return (time.process_time() - start) / calls


async def run(
    *, rounds: int, calls: int, backend: str = "sqlite", profile: str | None = None
) -> dict[str, list[float]]:
    """Per-call CPU seconds of each round, by mode ("open", "keyed")."""
    database_url: str | None = None
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if backend == "postgresql":
            from benchmarks.api_throughput import _database

            database_url = stack.enter_context(_database("postgresql", Path(tmp)))
        app = _app(Path(tmp), database_url)
        driver = _Driver(app)
        async with app.router.lifespan_context(app):
            key = await _key(app, driver, credits=rounds * calls * 2 + 1000)
            for path, headers in ((OPEN_PATH, []), (KEYED_PATH, key)):
                await _round(driver, path, headers, 200, 0)  # warm caches and code paths
            out: dict[str, list[float]] = {"open": [], "keyed": []}
            for r in range(rounds):
                order = [("open", OPEN_PATH, []), ("keyed", KEYED_PATH, key)]
                if r % 2:
                    order.reverse()
                for mode, path, headers in order:
                    out[mode].append(await _round(driver, path, headers, calls, r * calls))
            if profile:
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
                await _round(driver, KEYED_PATH, key, calls, 0)
                profiler.disable()
                profiler.dump_stats(profile)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="a fresh SQLite file, or a PostgreSQL database created and dropped (BAVLIO_BENCH_PG)",
    )
    parser.add_argument("--profile", default=None, help="cProfile the keyed calls into FILE")
    args = parser.parse_args(argv)
    out = asyncio.run(
        run(
            rounds=args.rounds,
            calls=args.calls,
            backend=args.backend,
            profile=args.profile,
        )
    )
    open_ms = statistics.median(out["open"]) * 1000
    keyed_ms = statistics.median(out["keyed"]) * 1000
    print(f"{args.backend}, rounds (ms CPU per call):")
    for mode in ("open", "keyed"):
        print(f"  {mode:5}", " ".join(f"{v * 1000:.3f}" for v in out[mode]))
    print(
        f"median: open {open_ms:.3f} ms, keyed {keyed_ms:.3f} ms, "
        f"keyed adds {keyed_ms - open_ms:.3f} ms CPU per call (x{keyed_ms / open_ms:.2f})"
    )


if __name__ == "__main__":
    main()
