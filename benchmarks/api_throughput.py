"""Keyed API throughput: ``POST /api/v1/email-verification/validate`` (API key, plan, rate limit,
1 credit per call) beside the same validation without auth and credits (the x402 route of a
``bavlio serve --unpaid`` server), so the keyed layer's cost shows as a ratio.

    .venv/bin/python -m benchmarks.api_throughput
    .venv/bin/python -m benchmarks.api_throughput --requests 2000 --levels 1 10 50 \\
        --processes 1 2 --backends sqlite postgresql
    .venv/bin/python -m benchmarks.api_throughput --smoke     # seconds: is everything wired?

Real ``bavlio serve`` processes on 127.0.0.1, one or two of them on one database; with two, the
load generator sends request i to process i mod 2 (two processes rather than uvicorn workers:
``bavlio serve`` has no worker option, and two processes on one database is how the API scales
out; each process keeps its own per-key rate-limit window, so the benchmark plan's limit is far
above what it sends). DNS answers come from the test suite's NSD lab (EMAILINTEL_NAMESERVERS);
the PostgreSQL database (127.0.0.1:5432, ``BAVLIO_BENCH_PG``) is created for the run and dropped.

The user, its key and its credits are made by the code behind ``bavlio users create --key`` and
``bavlio credits grant``. After each backend the ledger is counted: one debit per keyed 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from lab.dnslab import DnsLab  # noqa: E402  (the lab the test suite runs)

__all__ = [
    "KEYED_PATH",
    "OPEN_PATH",
    "SMOKE",
    "Charges",
    "Report",
    "Row",
    "Sample",
    "format_report",
    "main",
    "run",
]

KEYED_PATH = "/api/v1/email-verification/validate"
OPEN_PATH = "/api/x402/v1/email/validate"
PLAN = "bench"
DOMAINS = 19  # odd: round-robin over two processes still spreads every domain to both
ROUNDS = 4  # each cell alternates open and keyed chunks, so drift on a shared machine hits both
EMAIL = "bench@bavlio-bench.test"
SERVE = (sys.executable, "-m", "server", "serve", "--unpaid")
SMOKE: dict[str, Any] = {
    "requests": 20,
    "levels": (1, 4),
    "processes": (1, 2),
    "backends": ("sqlite",),
    "warmup": 8,
}
"""``--smoke``: every part wired (lab, both modes, round-robin, ledger check) in seconds."""
PG_ADMIN = os.environ.get("BAVLIO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Sample:
    """One mode at one concurrency: latencies of the 200s, other answers, wall time, server CPU."""

    latencies: list[float]
    failures: int
    seconds: float
    cpu_seconds: float

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: int) -> float:
        """The q-th percentile latency in ms."""
        if len(self.latencies) < 2:
            return 1000 * self.latencies[0] if self.latencies else float("nan")
        return 1000 * statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    @property
    def cpu_ms(self) -> float:
        """Server CPU (every process) per answered request, ms."""
        return 1000 * self.cpu_seconds / self.ok if self.ok else float("nan")


@dataclass
class Row:
    """Keyed and open at one (backend, processes, concurrency)."""

    backend: str
    processes: int
    concurrency: int
    open: Sample
    keyed: Sample

    @property
    def added_p50_ms(self) -> float:
        return self.keyed.pct(50) - self.open.pct(50)


@dataclass
class Charges:
    """What the ledger shows for one backend's user after the run."""

    keyed_calls: int
    debits: int
    debited_credits: int
    balance_drop: int


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    charges: dict[str, Charges] = field(default_factory=dict)
    requests: int = 0


# ---- the lab ---------------------------------------------------------------------------------


def lab_zones() -> dict[str, list[tuple[str, str, str]]]:
    """DOMAINS mail domains (MX to four hosts), so validate does real lookups (then cached)."""
    zones: dict[str, list[tuple[str, str, str]]] = {
        f"bench{i:02d}.test": [("@", "MX", f"10 mx{i % 4}.bench-mx.test.")] for i in range(DOMAINS)
    }
    zones["bench-mx.test"] = [(f"mx{k}", "A", f"127.0.1.{k + 1}") for k in range(4)]
    return zones


def address(i: int) -> str:
    return f"user{i % 997}.name@bench{i % DOMAINS:02d}.test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _database(backend: str, work: Path) -> Iterator[str]:
    """A fresh database URL for ``backend`` (a PostgreSQL database is dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{work / 'bench.sqlite3'}"
        return
    import psycopg

    name = "bavlio_bench_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _config(work: Path, database_url: str) -> Path:
    config = work / "bavlio.toml"
    config.write_text(
        f'database_url = "{database_url}"\n'
        f'secret_file = "{work / "bavlio.secret"}"\n'
        'log_level = "warning"\n'
        f"[plans.{PLAN}]\n"
        'rate_limit = "100000000/minute"\n'  # never the bottleneck (checked: no 429 counted)
    )
    return config


async def _account(config: Path, credits: int) -> str:
    """The benchmark user's API key, with ``credits`` granted (the CLI's own code path)."""
    from server.accounts_cli import credits_grant, users_create
    from server.settings import load_settings

    settings = load_settings(str(config), env_file=None)
    made = await users_create(settings, EMAIL, plan=PLAN, key=True, scopes=["*"])
    await credits_grant(settings, EMAIL, credits, reference="bench-" + secrets.token_hex(4))
    return str(made["api_key"])


async def _charges(config: Path, keyed_calls: int, granted: int) -> Charges:
    from sqlalchemy import func, select

    from server.billing.credits import CreditStore
    from server.db.engine import Database
    from server.db.models import CreditEntry, User
    from server.settings import load_settings

    settings = load_settings(str(config), env_file=None)
    db = Database.from_settings(settings)
    try:
        async with db.engine.connect() as conn:
            user_id = (await conn.execute(select(User.id).where(User.email == EMAIL))).scalar_one()
            count, total = (
                await conn.execute(
                    select(func.count(), func.coalesce(func.sum(CreditEntry.amount), 0)).where(
                        CreditEntry.user_id == user_id, CreditEntry.kind == "debit"
                    )
                )
            ).one()
        balance = await CreditStore(db.engine).balance(user_id)
    finally:
        await db.dispose()
    return Charges(keyed_calls, int(count), -int(total), granted - balance.balance)


def _environment(nameserver: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAVLIO_", "EMAILINTEL_"))}
    env["EMAILINTEL_NAMESERVERS"] = nameserver
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@contextmanager
def _servers(count: int, config: Path, env: dict[str, str], work: Path) -> Iterator[list[Server]]:
    """``count`` ``bavlio serve --unpaid`` processes on one config, stopped with SIGTERM."""
    started: list[Server] = []
    try:
        for n in range(count):
            port = _free_port()
            log = (work / f"serve-{n}.log").open("wb")
            proc = subprocess.Popen(
                [*SERVE, "--config", str(config), "--port", str(port)],
                env=env,
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            started.append(Server(f"http://127.0.0.1:{port}", proc, work / f"serve-{n}.log"))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bavlio serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"bavlio serve did not answer /health: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU consumed so far by ``pids`` (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# ---- the load generator ------------------------------------------------------------------------


async def _load(
    http: httpx.AsyncClient,
    urls: Sequence[str],
    headers: dict[str, str],
    count: int,
    concurrency: int,
    offset: int,
) -> tuple[list[float], int, float]:
    """``count`` validate calls, ``concurrency`` in flight, round-robin over ``urls``."""
    latencies: list[float] = []
    failures = 0
    next_index = 0

    async def worker() -> None:
        nonlocal failures, next_index
        while next_index < count:
            i = next_index
            next_index += 1
            body = {"email": address(offset + i)}
            t0 = time.perf_counter()
            try:
                response = await http.post(urls[i % len(urls)], json=body, headers=headers)
            except httpx.TransportError as exc:  # counted; the ledger check shows its charge
                failures += 1
                print(f"  {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            elapsed = time.perf_counter() - t0
            if response.status_code == 200:
                latencies.append(elapsed)
            else:
                failures += 1
                if failures == 1:
                    print(f"  {response.status_code}: {response.text[:300]}", file=sys.stderr)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures, time.perf_counter() - t0


async def _measure(
    servers: list[Server],
    api_key: str,
    levels: Sequence[int],
    requests: int,
    warmup: int,
    backend: str,
) -> tuple[list[Row], int]:
    """Rows for one server set; also how many keyed calls answered 200 (warm-up included)."""
    pids = [s.proc.pid for s in servers]
    modes = {
        "open": ([s.url + OPEN_PATH for s in servers], {}),
        "keyed": (
            [s.url + KEYED_PATH for s in servers],
            {"Authorization": f"Bearer {api_key}"},
        ),
    }
    # Idle connections are dropped by the client after 1 s, before uvicorn's 5 s keep-alive
    # timeout closes them under a request that is being sent (a reset, not a server error).
    size = max(levels) + 5
    pool = httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=1.0)
    keyed_ok = 0
    rows = []
    async with httpx.AsyncClient(limits=pool, timeout=60) as http:
        for urls, headers in modes.values():  # warm connections, imports and the DNS cache
            lat, failed, _ = await _load(http, urls, headers, warmup, 2, 0)  # every domain
            if failed:
                raise RuntimeError(f"{failed} warm-up calls to {urls[0]} failed")
            keyed_ok += len(lat) if headers else 0
        for c in levels:
            samples = {name: Sample([], 0, 0.0, 0.0) for name in modes}
            chunk = max(1, requests // ROUNDS)
            for n in range(ROUNDS):
                for name, (urls, headers) in modes.items():
                    cpu0 = cpu_seconds(pids)
                    lat, failed, wall = await _load(http, urls, headers, chunk, c, n * chunk)
                    sample = samples[name]
                    sample.latencies += lat
                    sample.failures += failed
                    sample.seconds += wall
                    sample.cpu_seconds += cpu_seconds(pids) - cpu0
                    keyed_ok += len(lat) if headers else 0
            for name, sample in samples.items():
                print(
                    f"  {backend} x{len(servers)} c={c} {name}: {sample.ok} ok, "
                    f"{sample.failures} failed, {sample.seconds:.2f}s",
                    file=sys.stderr,
                )
            rows.append(Row(backend, len(servers), c, samples["open"], samples["keyed"]))
    return rows, keyed_ok


def run(
    *,
    requests: int = 1000,
    levels: Sequence[int] = (1, 10, 50),
    processes: Sequence[int] = (1, 2),
    backends: Sequence[str] = ("sqlite", "postgresql"),
    warmup: int = 50,
) -> Report:
    """The whole benchmark; the rows and each backend's ledger check."""
    report = Report(requests=requests)
    lab = DnsLab(zones=lab_zones())
    lab.start()
    try:
        env = _environment(lab.nameserver)
        for backend in backends:
            work = Path(tempfile.mkdtemp(prefix=f"apibench-{backend}-"))
            with _database(backend, work) as url:
                config = _config(work, url)
                granted = len(processes) * (2 * warmup + len(levels) * requests) + 1000
                api_key = asyncio.run(_account(config, granted))
                keyed_calls = 0
                for count in processes:
                    with _servers(count, config, env, work) as servers:
                        rows, ok = asyncio.run(
                            _measure(servers, api_key, levels, requests, warmup, backend)
                        )
                        report.rows += rows
                        keyed_calls += ok
                report.charges[backend] = asyncio.run(_charges(config, keyed_calls, granted))
            shutil.rmtree(work)  # kept (database, server logs) when the run failed
    finally:
        lab.stop()
    return report


# ---- the table -------------------------------------------------------------------------------


def format_report(report: Report) -> str:
    """A Markdown table (keyed beside open, with ratios) and the ledger check per backend."""
    lines = [
        f"\nkeyed POST {KEYED_PATH} vs open POST {OPEN_PATH} (--unpaid), "
        f"{report.requests} requests per cell, latencies in ms\n",
        "| db | procs | conc | open req/s | keyed req/s | keyed/open req/s | open p50 | keyed p50 "
        "| added p50 | open p95 | keyed p95 | server CPU ms/req open / keyed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        lines.append(
            f"| {r.backend} | {r.processes} | {r.concurrency} | {r.open.per_second:,.0f} "
            f"| {r.keyed.per_second:,.0f} | {r.keyed.per_second / r.open.per_second:.2f} "
            f"| {r.open.pct(50):.2f} | {r.keyed.pct(50):.2f} | {r.added_p50_ms:+.2f} "
            f"| {r.open.pct(95):.2f} | {r.keyed.pct(95):.2f} "
            f"| {r.open.cpu_ms:.2f} / {r.keyed.cpu_ms:.2f} |"
        )
    failures = sum(r.open.failures + r.keyed.failures for r in report.rows)
    lines.append(f"\nnon-200 answers: {failures}")
    for backend, c in report.charges.items():
        verdict = (
            "OK" if c.debits == c.keyed_calls == c.debited_credits == c.balance_drop else "MISMATCH"
        )
        lines.append(
            f"ledger ({backend}): {c.keyed_calls} keyed 200s, {c.debits} debits, "
            f"{c.debited_credits} credits debited, balance down {c.balance_drop}: {verdict}"
        )
    single = [r for r in report.rows if r.concurrency == 1]
    for r in single:
        met = "MET" if r.added_p50_ms < 1.0 else "NOT MET"
        lines.append(
            f"goal (keyed layer adds < 1 ms p50), {r.backend} x{r.processes} c=1: "
            f"{r.added_p50_ms:+.2f} ms {met}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per cell (1000)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--warmup", type=int, default=50, help="warm-up calls per mode (50)")
    parser.add_argument("--smoke", action="store_true", help="20 requests, c=1 and 4, SQLite")
    args = parser.parse_args(argv)
    if args.smoke:
        report = run(**SMOKE)
    else:
        report = run(
            requests=args.requests,
            levels=args.levels,
            processes=args.processes,
            backends=args.backends,
            warmup=args.warmup,
        )
    print(format_report(report))


if __name__ == "__main__":
    main()
