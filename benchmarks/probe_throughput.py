"""SMTP probe benchmark: our verify_many() vs py3-validate-email, deep-email-validator and a raw loop.

Run: ``.venv/bin/python -m benchmarks.probe_throughput [--addresses 2000 --domains 200]``. It
starts the test suite's labs itself (Postfix + postgrey via MailLab, NSD via DnsLab and an
aiosmtpd MX that refuses with Spamhaus text), all on 127.0.0.0/8, sends the same addresses
through every implementation, and prints throughput (addresses/s, latency, RCPTs per
connection) and an accuracy table against the lab's truth (valid / invalid / catch-all /
greylisted / blocked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiosmtplib

from benchmarks._latency_relay import Address, Counters, RelayProcess
from emailintel.dns import DnsResolver
from emailintel.lists import Lists, default_lists
from emailintel.models import Reason, RiskResult, Verdict
from emailintel.smtp.politeness import Politeness, PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import StartTlsMode, Timeouts, probe_tls_context
from emailintel.typo import suggest_domain
from emailintel.verify import Validator, verify, verify_many
from tests.lab.dnslab import DnsLab, Record
from tests.lab.fakesmtp import SPAMHAUS_REPLY, Behaviour, FakeSmtpServer
from tests.lab.maillab import Listener, MailDomain, MailLab

Truth = Literal["valid", "invalid", "catch-all", "greylisted", "blocked"]
CLASSES: tuple[Truth, ...] = ("valid", "invalid", "catch-all", "greylisted", "blocked")

ROOT = Path(__file__).resolve().parents[1]
PYVE_RUNNER = ROOT / "benchmarks" / "peers" / "pyve_runner.py"
DEEP_RUNNER = ROOT / "benchmarks" / "peers" / "deep_runner.cjs"
HELO = "probe.verifier-lab.test"
SENDER = "bounce@verifier-lab.test"
BENCH_MX = 4  # bench domains are spread round-robin over this many Postfix listeners
BLOCKED_OCTET = 250  # the fake blocklisting MX sits at <lab /24>.250:25
REJECTS_PER_CONNECTION = 9  # the raw loop reconnects before Postfix's soft error limit (10)
RELAY_OCTET = 201  # latency mode: relays listen at <lab /24>.201, .202, ... (port 25)

_FIRST = (
    "anna", "bruno", "carla", "dario", "elena", "fabio", "greta", "hugo", "irene", "jakob",
    "katja", "lorenz", "marta", "nils", "olga", "pavel", "rosa", "stefan", "tanja", "urs",
)  # fmt: skip
_LAST = (
    "keller", "brandt", "moser", "lang", "huber", "wolf", "frank", "berger", "roth", "vogel",
    "sommer", "baumann", "graf", "koch", "lehmann", "meier", "schulz", "winter", "zimmer", "haas",
)  # fmt: skip


class PeerError(RuntimeError):
    """A peer runner could not be started or did not produce a result."""


@dataclass(frozen=True)
class Case:
    """One input address and what the lab knows it to be."""

    address: str
    domain: str
    truth: Truth


@dataclass(frozen=True)
class Plan:
    """The lab's domains (with their MX listener) and the addresses to verify."""

    domains: tuple[MailDomain, ...]
    blocked_domains: tuple[str, ...]
    cases: tuple[Case, ...]

    @property
    def addresses(self) -> list[str]:
        """The input addresses in order."""
        return [case.address for case in self.cases]


@dataclass
class Row:
    """Throughput of one implementation over the whole input."""

    name: str
    addresses: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    latency_note: str = ""
    rcpts: int | None = None
    connections: int | None = None
    cpu_seconds: float | None = None  # client-side CPU (user + sys) spent on the run
    round_trips: int | None = None  # counted at the latency relay (see benchmarks/_latency_relay)
    max_open: int | None = None  # most SMTP connections open at once, counted at the relay
    max_active: int | None = None  # ... until the client's last byte (relay's definition)
    answers_key: str | None = None  # the row's answers in Report.answers (None: not classified)
    most_sessions: int | None = None  # ours: most politeness session slots held at once

    @property
    def cpu_ms_per_address(self) -> float | None:
        """Client CPU per address in ms: what the implementation itself costs, load aside."""
        return None if self.cpu_seconds is None else self.cpu_seconds * 1e3 / self.addresses

    @property
    def rate(self) -> float:
        """Addresses per second."""
        return self.addresses / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0..1) of the per-address latencies in ms, if any were measured."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else None
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[
            round(q * 100) - 1
        ]

    @property
    def round_trips_per_address(self) -> float | None:
        """Relay-counted round trips per input address (None without the relay)."""
        return None if self.round_trips is None else self.round_trips / self.addresses

    def relayed(self, counters: Counters) -> Row:
        """This row with what the relay counted: round trips, connections, most open at once."""
        self.round_trips = counters.round_trips
        self.max_open = counters.max_open
        self.max_active = counters.max_active
        self.connections = counters.connections
        return self

    @property
    def rcpts_per_connection(self) -> float | None:
        """Average RCPT commands per SMTP connection (None when not measured)."""
        if self.rcpts is None or not self.connections:
            return None
        return self.rcpts / self.connections


@dataclass
class Report:
    """Everything one benchmark run measured."""

    plan: Plan
    rows: list[Row]
    answers: dict[str, dict[str, str]]  # implementation -> address -> class it answered
    primary: str  # the row our targets are judged on
    notes: list[str] = field(default_factory=list)
    rtt_ms: float | None = None  # set in latency mode: every row ran through the relay
    connections: int | None = None  # latency mode: the cap on concurrent connections for all

    def accuracy(self) -> dict[str, dict[Truth, tuple[int, int]]]:
        """implementation -> class -> (agreeing answers, addresses of that class)."""
        table: dict[str, dict[Truth, tuple[int, int]]] = {}
        for impl, answers in self.answers.items():
            counts: dict[Truth, list[int]] = {c: [0, 0] for c in CLASSES}
            for case in self.plan.cases:
                counts[case.truth][1] += 1
                if agrees(case.truth, answers.get(case.address, "missing")):
                    counts[case.truth][0] += 1
            table[impl] = {c: (v[0], v[1]) for c, v in counts.items()}
        return table

    def disagreements(self, impl: str) -> list[tuple[Case, str]]:
        """The cases where ``impl`` did not agree with the lab's truth."""
        answers = self.answers[impl]
        return [
            (case, answers.get(case.address, "missing"))
            for case in self.plan.cases
            if not agrees(case.truth, answers.get(case.address, "missing"))
        ]


def agrees(truth: Truth, answer: str) -> bool:
    """Whether an answer matches the truth; "unknown" is right for greylisted and blocked."""
    return answer == truth or (answer == "unknown" and truth in ("greylisted", "blocked"))


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# --- input -----------------------------------------------------------------------------------


def build_plan(addresses: int = 2000, domains: int = 200, *, seed: int = 7) -> Plan:
    """Spread ``addresses`` over ``domains``: mostly bench domains (half real users, half unknown)
    plus about 2 % each of catch-all, greylisted and blocklisting domains (at least one each)."""
    if domains < 4:
        raise ValueError("need at least 4 domains (bench, catch-all, greylisted, blocked)")
    if addresses < 2 * domains:
        raise ValueError("need at least 2 addresses per domain (one real, one unknown)")
    rng = random.Random(seed)
    special = max(1, domains // 50)
    kinds = ["catch-all"] * special + ["greylist"] * special + ["blocked"] * special
    kinds = ["bench"] * (domains - len(kinds)) + kinds
    per, extra = divmod(addresses, domains)
    names = [f"{f}.{la}" for f in _FIRST for la in _LAST]
    mail_domains: list[MailDomain] = []
    blocked: list[str] = []
    cases: list[Case] = []
    numbers: Counter[str] = Counter()
    for index, kind in enumerate(kinds):
        numbers[kind] += 1
        name = f"{kind.replace('-', '')}{numbers[kind]:04d}.test"
        count = per + (1 if index < extra else 0)
        real = rng.sample(names, (count + 1) // 2)
        unknown = [f"{n}{rng.randint(2, 98)}" for n in rng.sample(names, count // 2)]
        if kind == "blocked":
            blocked.append(name)
            cases += [Case(f"{lp}@{name}", name, "blocked") for lp in real + unknown]
            continue
        if kind == "catch-all":
            mail_domains.append(MailDomain(name, mx=("catchall",), users=(), catch_all=True))
            cases += [Case(f"{lp}@{name}", name, "catch-all") for lp in real + unknown]
            continue
        greylist = kind == "greylist"
        mx = "greylist" if greylist else f"bench{index % BENCH_MX + 1}"
        mail_domains.append(MailDomain(name, mx=(mx,), users=tuple(real), greylist=greylist))
        cases += [Case(f"{lp}@{name}", name, "greylisted" if greylist else "valid") for lp in real]
        cases += [Case(f"{lp}@{name}", name, "invalid") for lp in unknown]
    rng.shuffle(cases)
    return Plan(tuple(mail_domains), tuple(blocked), tuple(cases))


# --- labs ------------------------------------------------------------------------------------


@dataclass
class Labs:
    """The running labs: Postfix/postgrey, the blocklisting fake MX and NSD serving all zones."""

    mail: MailLab
    fake: FakeSmtpServer
    dns: DnsLab
    relay_routes: dict[Address, Address] = field(default_factory=dict)  # relay -> real MX

    @property
    def nameserver(self) -> str:
        """The lab NSD as "host:port"."""
        return self.dns.nameserver


@contextlib.contextmanager
def running_labs(plan: Plan, *, relayed: bool = False) -> Iterator[Labs]:
    """Start every lab the plan needs and stop them all afterwards, whatever happens.

    ``relayed``: every MX host name resolves to a relay address in the lab's /24 instead
    (``Labs.relay_routes`` says which real MX each one stands for; :func:`latency_relay` starts
    the relay), so every client reaches every MX through it.
    """
    listeners = [
        Listener(f"bench{k}", f"mx{k}.bench-mx.test", 100 + k, "bench")
        for k in range(1, BENCH_MX + 1)
    ]
    listeners += [
        Listener("catchall", "mx-catchall.bench-mx.test", 3, "bench"),
        Listener("greylist", "mx-greylist.bench-mx.test", 4, "bench"),
    ]
    # A long greylist delay keeps first-contact answers greylisted for the whole run.
    mail = MailLab(
        listeners=listeners, domains=plan.domains, in_flow_delay="0", greylist_delay=3600
    )
    with contextlib.ExitStack() as stack:
        mail.start()
        stack.callback(mail.stop)
        behaviour = Behaviour(rcpt_reply=SPAMHAUS_REPLY, hostname="mx.blocklist-mx.test")
        fake = FakeSmtpServer(f"{mail.prefix}.{BLOCKED_OCTET}", behaviour, port=25).start()
        stack.callback(fake.stop)
        zones = mail.dns_zones()
        for name in plan.blocked_domains:
            zones[name] = [("@", "MX", "10 mx.blocklist-mx.test.")]
        zones["blocklist-mx.test"] = [("mx", "A", fake.host)]
        routes: dict[Address, Address] = {}
        served: dict[str, list[Record]] = {}
        if relayed:
            real = sorted({mail.ip(lst.name) for lst in listeners} | {fake.host})
            via = {ip: f"{mail.prefix}.{RELAY_OCTET + n}" for n, ip in enumerate(real)}
            routes = {(via[ip], 25): (ip, 25) for ip in real}
            served = {zone: [_via(r, via) for r in records] for zone, records in zones.items()}
        dns = DnsLab(served if relayed else zones).start()
        stack.callback(dns.stop)
        yield Labs(mail, fake, dns, routes)


def _via(record: Record, via: dict[str, str]) -> Record:
    """An A record pointed at the relay standing for its address (other records as they are)."""
    if record[1] != "A" or record[2] not in via:
        return record
    if len(record) == 4:
        return (record[0], "A", via[record[2]], record[3])
    return (record[0], "A", via[record[2]])


@contextlib.contextmanager
def latency_relay(labs: Labs, rtt_ms: float) -> Iterator[RelayProcess]:
    """The latency relay in front of every lab MX, in a process of its own, for one RTT."""
    if not labs.relay_routes:
        raise ValueError("the labs were started without relay addresses (relayed=False)")
    with RelayProcess(labs.relay_routes, rtt=rtt_ms / 1e3) as relay:
        yield relay


def warm_up(labs: Labs, plan: Plan, connections: int = 24) -> None:
    """Hold ``connections`` sessions per MX open at once, then QUIT them all, so Postfix has
    forked the smtpd processes every timed run needs (idle ones are reused for 100 s)."""
    ips = sorted({labs.mail.ip(mx) for d in plan.domains for mx in d.mx} | {labs.fake.host})

    async def one(ip: str, tls: bool, release: asyncio.Event) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=ip,
            port=25,
            local_hostname=HELO,
            start_tls=tls,
            validate_certs=False,
            timeout=5,
        )
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await smtp.connect()
            await release.wait()
            await smtp.quit()
        smtp.close()

    async def all_of_them() -> None:
        release = asyncio.Event()
        tasks = [
            asyncio.create_task(one(ip, n % 2 == 0, release))
            for ip in ips
            for n in range(connections)
        ]
        await asyncio.sleep(1.0)  # the connections are up (or have failed) by now
        release.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)

    asyncio.run(all_of_them())


def warm_typo_cache(plan: Plan) -> str:
    """Fill the typo module's per-domain cache before any timed run, so every run pays the same.

    Lab domains end in ``.test``, an unknown TLD, which sends each new domain down the costly
    suffix search; real domains with known TLDs skip it. Returns a note with the cost.
    """
    domains = sorted({c.domain for c in plan.cases})
    start = time.perf_counter()
    for domain in domains:
        suggest_domain(domain)
    ms = (time.perf_counter() - start) * 1e3
    return (
        f"typo suggestions for {len(domains)} new .test domains took {ms:.0f} ms "
        f"({ms / len(domains):.1f} ms each); cached before the timed runs"
    )


# --- our implementation ----------------------------------------------------------------------


class CountingPoliteness(Politeness):
    """Politeness that also counts RCPT commands (the prober asks it before every RCPT) and the
    most sessions held at once (the prober holds one around every connection it opens)."""

    rcpts = 0
    holding = 0
    most_held = 0

    @contextlib.asynccontextmanager
    async def session(
        self,
        host: str,
        *,
        provider: str | None = None,
        provider_per_minute: float = 30.0,
        provider_connections: int | None = None,
    ) -> AsyncIterator[None]:
        """Hold the slot as usual, counting the holders."""
        async with super().session(
            host,
            provider=provider,
            provider_per_minute=provider_per_minute,
            provider_connections=provider_connections,
        ):
            self.holding += 1
            self.most_held = max(self.most_held, self.holding)
            try:
                yield
            finally:
                self.holding -= 1

    async def rcpt(self, host: str) -> None:
        """Count, then wait for the token as usual."""
        self.rcpts += 1
        await super().rcpt(host)


def lab_politeness(connections: int | None = None) -> CountingPoliteness:
    """Politeness for a loopback lab: per-MX limits raised, no jitter, no back-off pauses;
    ``connections`` caps the SMTP connections open at once (all MXes together)."""
    return CountingPoliteness(
        PolitenessConfig(
            connections_per_host=48,  # below Postfix's smtpd_client_connection_count_limit (50)
            rcpt_per_minute_per_host=1e9,
            global_concurrency=connections or 256,
            jitter=0.0,
            backoff=0.0,
        )
    )


def make_prober(starttls: StartTlsMode, politeness: Politeness | None = None) -> Prober:
    """A prober with a lab identity, private (loopback) MX allowed and lab politeness."""
    return Prober(
        helo=HELO,
        mail_from=SENDER,
        allow_private_mx=True,
        starttls=starttls,
        politeness=politeness or lab_politeness(),
        timeouts=Timeouts(connect=5, banner=10, command=10),
        # The lab's Postfix keeps its default soft error limit (10): the same budget as the raw loop.
        max_rejections_per_connection=REJECTS_PER_CONNECTION,
    )


def our_class(result: RiskResult) -> str:
    """Map our result to a benchmark class (anything unexpected is spelled out)."""
    reasons = set(result.reasons)
    if Reason.CATCH_ALL in reasons:
        return "catch-all"
    if Reason.GREYLISTED in reasons:
        return "greylisted"
    if Reason.BLOCKED_BY_SERVER in reasons:
        return "blocked"
    if Reason.MAILBOX_NOT_FOUND in reasons and result.verdict is Verdict.INVALID:
        return "invalid"
    if Reason.SMTP_ACCEPTED in reasons and result.verdict is Verdict.VALID:
        return "valid"
    return f"other({result.verdict.value}: {', '.join(r.value for r in result.reasons)})"


def run_ours(
    labs: Labs,
    plan: Plan,
    *,
    starttls: StartTlsMode,
    concurrency: int,
    lists: Lists,
    connections: int | None = None,
) -> tuple[Row, dict[str, str]]:
    """verify_many() over the whole input (greylisted addresses are not retried).

    A fresh validator (cold DNS cache) but already loaded ``lists``, as in a long-running process.
    ``connections`` caps the SMTP connections open at once (the politeness' global limit).
    """
    politeness = lab_politeness(connections)
    prober = make_prober(starttls, politeness)
    validator = Validator(resolver=DnsResolver([labs.nameserver]), lists=lists)
    answers: dict[str, str] = {}
    done_at: list[float] = []

    async def go() -> float:
        start = time.perf_counter()
        async with asyncio.timeout(60 + 0.5 * len(plan.cases)):
            async for result in verify_many(
                plan.addresses,
                prober=prober,
                validator=validator,
                concurrency=concurrency,
                retry_greylisted=False,
            ):
                answers[result.address] = our_class(result)
                done_at.append((time.perf_counter() - start) * 1e3)
        return time.perf_counter() - start

    cpu = _cpu()
    seconds = asyncio.run(go())
    cpu = _cpu() - cpu
    tls = "STARTTLS opportunistic" if starttls != "never" else "plain, starttls=never"
    cap = f", at most {connections} connections" if connections else ""
    row = Row(
        f"emailintel verify_many ({tls}, {concurrency} domains at once{cap})",
        len(plan.cases),
        seconds,
        done_at,
        "time to result within the batch",
        rcpts=politeness.rcpts,
        connections=prober.sessions_opened,
        cpu_seconds=cpu,
        most_sessions=politeness.most_held,
    )
    return row, answers


def single_latency(
    labs: Labs, plan: Plan, sample: int, starttls: StartTlsMode, lists: Lists
) -> list[float]:
    """Latency of one verify() call at a time (fresh prober each, as a one-off caller has)."""
    step = max(1, len(plan.cases) // sample)
    chosen = [c.address for c in plan.cases[::step][:sample]]
    validator = Validator(resolver=DnsResolver([labs.nameserver]), lists=lists)
    out: list[float] = []

    async def go() -> None:
        async with asyncio.timeout(30 + 15 * len(chosen)):
            for address in chosen:
                start = time.perf_counter()
                await verify(address, prober=make_prober(starttls), validator=validator)
                out.append((time.perf_counter() - start) * 1e3)

    asyncio.run(go())
    return out


# --- peers -----------------------------------------------------------------------------------


def run_peer(command: Sequence[str], job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run a peer runner with ``job`` as JSON on stdin and return its JSON answer.

    The answer gets ``"cpu"``: the runner's CPU seconds (user + sys) as the kernel counted them.
    """
    cpu = _cpu(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(
            list(command),
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"{command[0]}: {exc}") from None
    if proc.returncode != 0:
        raise PeerError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    try:
        answer: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise PeerError(f"{command[0]} printed no JSON:\n{proc.stdout[-500:]}") from None
    answer["cpu"] = _cpu(resource.RUSAGE_CHILDREN) - cpu
    return answer


def run_pyve(labs: Labs, plan: Plan, threads: int) -> tuple[Row, dict[str, str]]:
    """py3-validate-email with its defaults (STARTTLS) in ``threads`` threads."""
    job = {
        "nameserver": labs.nameserver,
        "addresses": plan.addresses,
        "threads": threads,
        "helo": HELO,
    }
    answer = run_peer([sys.executable, str(PYVE_RUNNER)], job, 120 + 0.5 * len(plan.cases))
    mapping = {True: "valid", False: "invalid", None: "unknown"}
    answers = {r["address"]: mapping[r["result"]] for r in answer["results"]}
    return _peer_row(
        f"py3-validate-email 1.0.5.post2 ({threads} threads, STARTTLS)", plan, answer
    ), answers


def _peer_row(label: str, plan: Plan, answer: dict[str, Any]) -> Row:
    """A peer runner's answer as a table row (one connection and one RCPT per call there)."""
    return Row(
        label,
        len(plan.cases),
        float(answer["elapsed"]),
        [float(r["ms"]) for r in answer["results"]],
        "per call, under the same concurrency",
        rcpts=len(plan.cases),
        connections=len(plan.cases),
        cpu_seconds=answer["cpu"],
    )


def run_deep(labs: Labs, plan: Plan, concurrency: int) -> tuple[Row, dict[str, str]]:
    """deep-email-validator (typo check off: it rewrites .test domains) at ``concurrency``."""
    node = shutil.which("node")
    if node is None:
        raise PeerError("node not found (scripts/test.sh installs it)")
    job = {"nameserver": labs.nameserver, "addresses": plan.addresses, "concurrency": concurrency}
    answer = run_peer([node, str(DEEP_RUNNER)], job, 120 + 0.5 * len(plan.cases))
    answers = {r["address"]: "valid" if r["valid"] else "invalid" for r in answer["results"]}
    return _peer_row(
        f"deep-email-validator 0.1.27 (Node, {concurrency} concurrent)", plan, answer
    ), answers


# --- raw ceiling -----------------------------------------------------------------------------


async def _raw_connection(
    ip: str, queue: deque[str], latencies: list[float], *, tls: bool = False
) -> int:
    """One connection to ``ip`` issuing RCPTs from ``queue``, one per round trip, until it is
    empty, before Postfix's error limit or after 421 (STARTTLS with ``tls``). Returns RCPTs sent."""
    sent = rejects = 0
    smtp = aiosmtplib.SMTP(
        hostname=ip,
        port=25,
        local_hostname=HELO,
        start_tls=None if tls else False,  # None: STARTTLS when offered, as ours does
        tls_context=probe_tls_context() if tls else None,
        validate_certs=False,
        timeout=10,
    )
    await smtp.connect()
    try:
        await smtp.ehlo()
        await smtp.execute_command(b"MAIL", b"FROM:<" + SENDER.encode() + b">")
        while queue and rejects < REJECTS_PER_CONNECTION:
            address = queue.popleft()
            start = time.perf_counter()
            reply = await smtp.execute_command(b"RCPT", b"TO:<" + address.encode() + b">")
            latencies.append((time.perf_counter() - start) * 1e3)
            sent += 1
            if reply.code == 421:
                queue.appendleft(address)  # asked again on the next connection
                break
            if reply.code >= 300:
                rejects += 1
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit()
        smtp.close()
        await asyncio.sleep(0)  # the socket closes on the next loop turn: before the next connect
    return sent


async def _raw_mx(
    ip: str, queue: deque[str], latencies: list[float], *, tls: bool = False
) -> tuple[int, int]:
    """Connections to ``ip`` one after another until its queue is empty: (RCPTs, connections)."""
    sent = connections = 0
    limit = len(queue) + 1
    while queue and connections <= limit:
        connections += 1
        sent += await _raw_connection(ip, queue, latencies, tls=tls)
    return sent, connections


async def _raw_pool(
    queues: dict[str, deque[str]], workers: int, latencies: list[float], *, tls: bool = False
) -> tuple[int, int]:
    """``workers`` connections at once over all MXes: each worker takes the MX with the most
    addresses left per worker on it, runs one connection there, and chooses again."""
    on: Counter[str] = Counter()
    limit = sum(len(q) for q in queues.values()) + workers
    totals = [0, 0]  # RCPTs, connections

    async def worker() -> None:
        while totals[1] <= limit:
            waiting = [ip for ip, q in queues.items() if q]
            if not waiting:
                return
            ip = max(waiting, key=lambda i: len(queues[i]) / (on[i] + 1))
            on[ip] += 1
            totals[1] += 1
            try:
                sent = await _raw_connection(ip, queues[ip], latencies, tls=tls)
            finally:
                on[ip] -= 1
            totals[0] += sent

    await asyncio.gather(*(worker() for _ in range(workers)))
    return totals[0], totals[1]


def run_ceiling(
    labs: Labs, plan: Plan, *, tls: bool = False, connections: int | None = None
) -> Row:
    """The raw ceiling: reused connections sending one RCPT per round trip, no pipelining.

    Without ``connections``, one connection per MX at a time, all MXes at once; with it, that
    many connections at once spread over the MXes by addresses left (latency mode, where every
    contender gets the same number). MX addresses are looked up before the clock starts; no
    catch-all probe, no classification. With ``tls`` every connection does STARTTLS (the
    like-for-like ceiling of our TLS row)."""
    resolver = DnsResolver([labs.nameserver])
    by_ip: dict[str, deque[str]] = defaultdict(deque)

    async def lookups() -> None:
        for domain in sorted({c.domain for c in plan.cases}):
            facts = await resolver.lookup_mx(domain, resolve_addresses=True)
            by_ip[facts.mx[0].addresses[0]].extend(
                c.address for c in plan.cases if c.domain == domain
            )

    asyncio.run(lookups())
    latencies: list[float] = []

    async def go() -> tuple[float, list[tuple[int, int]]]:
        start = time.perf_counter()
        async with asyncio.timeout(60 + 0.5 * len(plan.cases)):
            if connections:
                counts = [await _raw_pool(by_ip, connections, latencies, tls=tls)]
            else:
                counts = await asyncio.gather(
                    *(_raw_mx(ip, q, latencies, tls=tls) for ip, q in by_ip.items())
                )
        return time.perf_counter() - start, counts

    cpu = _cpu()
    seconds, counts = asyncio.run(go())
    cpu = _cpu() - cpu
    name = "raw STARTTLS ceiling" if tls else "raw ceiling"
    how = (
        f"{connections} reused connections over {len(by_ip)} MXes"
        if connections
        else f"1 reused connection per MX, {len(by_ip)} MXes"
    )
    return Row(
        f"{name} (aiosmtplib, {how})",
        len(plan.cases),
        seconds,
        latencies,
        "one RCPT round trip",
        rcpts=sum(c[0] for c in counts),
        connections=sum(c[1] for c in counts),
        cpu_seconds=cpu,
    )


# --- the run ---------------------------------------------------------------------------------


def run(
    addresses: int = 2000,
    domains: int = 200,
    *,
    concurrency: int = 64,
    pyve_threads: int = 10,
    deep_concurrency: int = 10,
    peers: bool = True,
    plain: bool = True,
    latency_sample: int = 50,
) -> Report:
    """Build the input, start the labs, run every implementation on it and stop the labs."""
    plan = build_plan(addresses, domains)
    rows: list[Row] = []
    answers: dict[str, dict[str, str]] = {}
    lists = default_lists()
    notes = [_load("at start"), warm_typo_cache(plan)]
    with running_labs(plan) as labs:
        warm_up(labs, plan)
        row, answers["ours"] = run_ours(
            labs, plan, starttls="opportunistic", concurrency=concurrency, lists=lists
        )
        rows.append(row)
        primary = row.name
        if plain:
            row, answers["ours (plain)"] = run_ours(
                labs, plan, starttls="never", concurrency=concurrency, lists=lists
            )
            rows.append(row)
        if latency_sample:
            sample = single_latency(labs, plan, latency_sample, "opportunistic", lists)
            rows.append(
                Row(
                    "emailintel verify(), one address at a time (STARTTLS)",
                    len(sample),
                    sum(sample) / 1e3,
                    sample,
                    "per call",
                )
            )
        if peers:
            row, answers["py3-validate-email"] = run_pyve(labs, plan, pyve_threads)
            rows.append(row)
            row, answers["deep-email-validator"] = run_deep(labs, plan, deep_concurrency)
            rows.append(row)
        rows.append(run_ceiling(labs, plan))
        rows.append(run_ceiling(labs, plan, tls=True))
    notes.append(_load("at the end"))
    return Report(plan, rows, answers, primary, notes)


def run_latency(
    addresses: int = 2000,
    domains: int = 200,
    *,
    rtts_ms: Sequence[float] = (0.0, 50.0, 100.0),
    connections: int = 10,
    concurrency: int = 64,
    peers: bool = True,
    plain: bool = True,
) -> list[Report]:
    """Every contender through the latency relay at each RTT, ``connections`` at once for all.

    One lab for all RTTs (MX names resolve to the relay); a fresh relay process per RTT. The
    relay counts each contender's connections, the most open at once and its round trips.
    """
    if connections < 1:
        raise ValueError("connections must be at least 1")
    plan = build_plan(addresses, domains)
    lists = default_lists()
    typo_note = warm_typo_cache(plan)
    reports: list[Report] = []
    with running_labs(plan, relayed=True) as labs:
        for rtt in rtts_ms:
            warm_up(labs, plan)
            report = Report(plan, [], {}, "", [_load("at start"), typo_note], rtt, connections)
            with latency_relay(labs, rtt) as relay:
                relay.take()
                modes: list[tuple[StartTlsMode, str]] = [("opportunistic", "ours")]
                modes += [("never", "ours (plain)")] if plain else []
                for starttls, key in modes:
                    row, found = run_ours(
                        labs,
                        plan,
                        starttls=starttls,
                        concurrency=concurrency,
                        lists=lists,
                        connections=connections,
                    )
                    _relayed(report, relay, row, found, key)
                report.primary = report.rows[0].name
                if peers:
                    _relayed(
                        report, relay, *run_pyve(labs, plan, connections), "py3-validate-email"
                    )
                    _relayed(
                        report, relay, *run_deep(labs, plan, connections), "deep-email-validator"
                    )
                _relayed(report, relay, run_ceiling(labs, plan, connections=connections))
                _relayed(report, relay, run_ceiling(labs, plan, tls=True, connections=connections))
            report.notes.append(_load("at the end"))
            reports.append(report)
    return reports


def _relayed(
    report: Report,
    relay: RelayProcess,
    row: Row,
    found: dict[str, str] | None = None,
    key: str | None = None,
) -> None:
    """Add ``row`` with the relay's counters of its window (after its connections closed)."""
    still_open = relay.wait_idle(30)
    if still_open:
        report.notes.append(f"{still_open} connections still open at the relay after {row.name}")
    row.relayed(relay.take())
    if key is not None and found is not None:
        report.answers[key] = found
        row.answers_key = key
    report.rows.append(row)


def _load(when: str) -> str:
    one, five, _ = os.getloadavg()
    return f"load average {when}: {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(report: Report) -> str:
    """The throughput table, ratios, accuracy table and targets as text."""
    relayed = report.rtt_ms is not None
    lines = [
        f"RTT {report.rtt_ms:g} ms through the latency relay, at most {report.connections} SMTP "
        "connections at once for every contender"
    ] if relayed else []  # fmt: skip
    lines += [
        f"{len(report.plan.cases)} addresses over {len({c.domain for c in report.plan.cases})} "
        f"domains; truth: "
        + ", ".join(f"{c} {sum(1 for x in report.plan.cases if x.truth == c)}" for c in CLASSES),
        "",
        f"{'implementation':<72} {'addr/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'RCPT/conn':>9} {'conns':>6} {'CPU ms/addr':>11}"
        + (f" {'RT/addr':>8} {'max active/open':>15}" if relayed else ""),
    ]
    for row in report.rows:
        relay_cells = (
            f" {_fmt(row.round_trips_per_address, '.2f'):>8} "
            f"{_fmt(row.max_active, 'd') + ' / ' + _fmt(row.max_open, 'd'):>15}"
            if relayed
            else ""
        )
        lines.append(
            f"{row.name:<72} {row.rate:>9.1f} {_fmt(row.percentile(0.5), '.1f'):>8} "
            f"{_fmt(row.percentile(0.95), '.1f'):>8} {_fmt(row.rcpts_per_connection, '.1f'):>9} "
            f"{_fmt(row.connections, 'd'):>6} {_fmt(row.cpu_ms_per_address, '.2f'):>11}"
            f"{relay_cells}   [{row.latency_note}]"
        )
    if relayed:
        cap = report.connections or 0
        over = [r.name for r in report.rows if r.max_active is None or r.max_active > cap]
        lingering = [r.name for r in report.rows if (r.max_open or 0) > cap]
        lines.append(
            f"connection cap {cap}: "
            + ("held by every contender" if not over else "EXCEEDED by " + "; ".join(over))
            + " (most connections active at once, counted at the relay)"
        )
        if lingering:
            lines.append(
                f"  more than {cap} open (not active: waiting for the server's close) by "
                + "; ".join(lingering)
            )
        for row in report.rows:
            if row.most_sessions is not None:
                lines.append(f"  {row.name}: at most {row.most_sessions} sessions held at once")
    by_name = {row.name: row for row in report.rows}
    ours = by_name[report.primary]
    peers = [r for r in report.rows if r.name.startswith(("py3-", "deep-"))]
    ceiling = next(r for r in report.rows if r.name.startswith("raw ceiling"))
    tls_ceiling = next((r for r in report.rows if r.name.startswith("raw STARTTLS")), None)
    lines.append("")
    for mine in [r for r in report.rows if r.name.startswith("emailintel verify_many")]:
        ratios = [f"/ {p.name.split(' ')[0]} = {mine.rate / p.rate:.1f}x" for p in peers if p.rate]
        ratios.append(f"/ ceiling = {mine.rate / ceiling.rate:.0%}")
        if tls_ceiling is not None and tls_ceiling.rate:
            ratios.append(f"/ STARTTLS ceiling = {mine.rate / tls_ceiling.rate:.0%}")
        lines.append(f"{mine.name}: " + ", ".join(ratios))
    accuracy = report.accuracy()
    lines += [
        "",
        "accuracy vs lab truth (agreeing / addresses; 'unknown' counts for greylisted and blocked)",
    ]
    impls = list(accuracy)
    lines.append(f"{'class':<11}" + "".join(f"{i:>24}" for i in impls))
    for klass in CLASSES:
        cells = []
        for impl in impls:
            ok, n = accuracy[impl][klass]
            cells.append(f"{ok}/{n} ({ok / n:.0%})" if n else "-")
        lines.append(f"{klass:<11}" + "".join(f"{c:>24}" for c in cells))
    lines += ["", "answers given per class:"]
    for impl in impls:
        given: dict[Truth, Counter[str]] = {c: Counter() for c in CLASSES}
        for case in report.plan.cases:
            given[case.truth][report.answers[impl].get(case.address, "missing")] += 1
        parts = [
            f"{k}: " + ", ".join(f"{a} {n}" for a, n in v.most_common())
            for k, v in given.items()
            if v
        ]
        lines.append(f"  {impl}: " + "; ".join(parts))
    total_ok = sum(ok for ok, _ in accuracy["ours"].values())
    fastest = max(peers, key=lambda r: r.rate, default=None)
    times, part = (10, 0.6) if relayed else (20, 0.5)  # issue 10's targets at latency
    lines += ["", "targets:"]
    if fastest is not None:
        ratio = ours.rate / fastest.rate
        lines.append(
            f"  >= {times}x the faster peer ({fastest.name.split(' ')[0]}): {ratio:.1f}x {'MET' if ratio >= times else 'NOT MET'}"
        )
    share = ours.rate / ceiling.rate
    lines.append(
        f"  >= {part:.0%} of the raw ceiling: {share:.0%} {'MET' if share >= part else 'NOT MET'}"
    )
    if tls_ceiling is not None and tls_ceiling.rate:
        like = ours.rate / tls_ceiling.rate
        lines.append(
            f"  (like for like: {like:.0%} of the raw STARTTLS ceiling, "
            f"{'MET' if like >= part else 'NOT MET'})"
        )
    n = len(report.plan.cases)
    lines.append(
        f"  100% agreement with the lab: {total_ok}/{n} {'MET' if total_ok == n else 'NOT MET'}"
    )
    for case, answer in report.disagreements("ours")[:10]:
        lines.append(f"    {case.address}: truth {case.truth}, ours {answer}")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def _short(row: Row) -> str:
    names = {"ours": "ours, STARTTLS", "ours (plain)": "ours, plain"}
    return names.get(row.answers_key or "", row.answers_key or row.name.split(" (")[0])


def format_latency_summary(reports: Sequence[Report]) -> str:
    """One table over every RTT (markdown): rate, RCPTs per connection, round trips per address,
    the most connections open at once, and agreement with the lab."""
    lines = [
        "| RTT | implementation | addr/s | RCPT/conn | RT/addr | max active / open | agreement |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for report in reports:
        accuracy = report.accuracy()
        n = len(report.plan.cases)
        for row in report.rows:
            agreed = "-"
            if row.answers_key is not None:
                agreed = f"{sum(ok for ok, _ in accuracy[row.answers_key].values())}/{n}"
            lines.append(
                f"| {report.rtt_ms:g} ms | {_short(row)} | {row.rate:.1f} | "
                f"{_fmt(row.rcpts_per_connection, '.1f')} | "
                f"{_fmt(row.round_trips_per_address, '.2f')} | "
                f"{_fmt(row.max_active, 'd')} / {_fmt(row.max_open, 'd')} | {agreed} |"
            )
    return "\n".join(lines)


def _rtts(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected RTTs in ms like 0,50,100, got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected RTTs in ms like 0,50,100, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=2000)
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64, help="domains verified at once")
    parser.add_argument("--pyve-threads", type=int, default=10)
    parser.add_argument("--deep-concurrency", type=int, default=10)
    parser.add_argument("--no-peers", action="store_true", help="skip py3-validate-email and deep")
    parser.add_argument(
        "--rtt",
        type=_rtts,
        help="latency mode: RTTs in ms (e.g. 0,50,100); every MX is reached through a relay "
        "delaying each direction by half of it",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=10,
        help="latency mode: SMTP connections at once, the same cap for every contender",
    )
    args = parser.parse_args(argv)
    if args.rtt is not None:
        reports = run_latency(
            args.addresses,
            args.domains,
            rtts_ms=args.rtt,
            connections=args.connections,
            concurrency=args.concurrency,
            peers=not args.no_peers,
        )
        for report in reports:
            print(format_report(report), end="\n\n")
        print(format_latency_summary(reports))
        return
    report = run(
        args.addresses,
        args.domains,
        concurrency=args.concurrency,
        pyve_threads=args.pyve_threads,
        deep_concurrency=args.deep_concurrency,
        peers=not args.no_peers,
    )
    print(format_report(report))


if __name__ == "__main__":
    main()
