"""Validate benchmark: our offline path vs email-validator and py3-validate-email, on one core.

Run: ``.venv/bin/python -m benchmarks.validate_bench [--n 100000] [--rounds 3] [--no-dns]``. The
same generated addresses go through every implementation in one run, in interleaved rounds (the
best round of each counts; time is this process's CPU time, which on an otherwise idle core is
the wall time and on a shared machine leaves out other tenants' time slices); the
table prints addresses/s and our speed as a multiple of each. emval (Rust, syntax only: no lists,
typo or risk) is the ceiling row. With DNS on (the default) it also starts the NSD lab from the
test suite and reports ``validate()`` latency p50/p95, cold and warm cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable

from benchmarks._addresses import generate

os.environ.setdefault("PY3VE_IGNORE_UPDATER", "1")  # py3-validate-email downloads at import


def _ours() -> Callable[[str], bool]:
    from emailintel.models import Verdict
    from emailintel.verify import Validator

    validator = Validator(check_dns=False)

    def run(address: str) -> bool:
        return validator.validate_offline(address).verdict != Verdict.INVALID

    return run


def _email_validator() -> Callable[[str], bool]:
    from email_validator import EmailNotValidError, validate_email

    def run(address: str) -> bool:
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError:
            return False
        return True

    return run


def _py3_validate_email() -> Callable[[str], bool]:
    from validate_email import validate_email

    def run(address: str) -> bool:
        return bool(
            validate_email(
                email_address=address,
                check_format=True,
                check_blacklist=True,
                check_dns=False,
                check_smtp=False,
            )
        )

    return run


def _emval() -> Callable[[str], bool]:
    from emval import EmailValidator

    # the options closest to ours: SMTPUTF8 and quoted local parts allowed, .test allowed, no DNS
    validator = EmailValidator(
        allow_smtputf8=True,
        allow_quoted_local=True,
        deliverable_address=False,
        allowed_special_domains=["test"],
    )

    def run(address: str) -> bool:
        try:
            validator.validate_email(address)
        except Exception:  # emval raises built-in exception types (SyntaxError, ValueError)
            return False
        return True

    return run


OURS = "emailintel (offline)"
CEILING = "ceiling: emval 0.1 (Rust, syntax only)"
PEERS: dict[str, Callable[[], Callable[[str], bool]]] = {
    OURS: _ours,
    "email-validator 2.x (check_deliverability=False)": _email_validator,
    "py3-validate-email (dns/smtp off)": _py3_validate_email,
    CEILING: _emval,
}


def _throughput(fn: Callable[[str], bool], addresses: list[str]) -> tuple[float, int]:
    for address in addresses[:2000]:  # warm imports and caches the same way for everyone
        fn(address)
    # CPU time of this process: on a shared machine, wall time also counts other tenants' slices
    start = time.process_time()
    accepted = sum(1 for address in addresses if fn(address))
    return len(addresses) / (time.process_time() - start), accepted


def offline_table(n: int, rounds: int = 3) -> list[tuple[str, float, int]]:
    """Every implementation over the same n addresses, ``rounds`` times interleaved.

    Returns (name, best addresses/s, accepted) per implementation, in PEERS order.
    """
    addresses = generate(n)
    best: dict[str, tuple[float, int]] = {}
    for _ in range(rounds):
        for name, factory in PEERS.items():
            # a new instance each round: no round starts with caches another round filled
            rate, accepted = _throughput(factory(), addresses)
            if name not in best or rate > best[name][0]:
                best[name] = (rate, accepted)
    return [(name, *best[name]) for name in PEERS]


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def _dns_latency(domains: int) -> dict[str, tuple[float, float]]:
    from emailintel.dns import DnsResolver
    from emailintel.verify import Validator
    from tests.lab.dnslab import DnsLab  # the same lab the test suite runs

    zones = {
        f"bench{i:04d}.test": [("@", "MX", f"10 mx{i % 4}.bench-mx.test.")] for i in range(domains)
    }
    zones["bench-mx.test"] = [(f"mx{k}", "A", f"127.0.1.{k + 1}") for k in range(4)]
    lab = DnsLab(zones=zones)
    lab.start()
    try:
        addresses = [f"john.smith@bench{i:04d}.test" for i in range(domains)]
        out: dict[str, tuple[float, float]] = {}
        validator = Validator(resolver=DnsResolver([lab.nameserver]))
        for label in ("cold", "warm"):
            if label == "cold":
                validator.resolver.clear_cache()
            times: list[float] = []
            for address in addresses:
                start = time.perf_counter()
                result = await validator.validate(address)
                times.append((time.perf_counter() - start) * 1000)
                if result.dns is None or result.dns.status != "ok":
                    raise RuntimeError(f"lab lookup failed: {result}")
            out[label] = (_percentile(times, 50), _percentile(times, 95))
        return out
    finally:
        lab.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="addresses (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best counts)")
    parser.add_argument("--no-dns", action="store_true", help="skip the DNS latency part")
    parser.add_argument("--domains", type=int, default=200, help="lab domains for DNS latency")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for everyone

    rows = offline_table(args.n, args.rounds)
    ours = rows[0][1]
    print(
        f"\nvalidate, offline path: {args.n:,} generated addresses, one core, "
        f"best of {args.rounds} interleaved rounds\n"
    )
    print("| implementation | addresses/s | accepted | emailintel ÷ this |")
    print("|---|---:|---:|---:|")
    for name, rate, accepted in rows:
        print(f"| {name} | {rate:,.0f} | {accepted:,} | {ours / rate:.2f}x |")
    fastest = max((row for row in rows if row[0] not in (OURS, CEILING)), key=lambda r: r[1])
    print(f"\nemailintel ÷ fastest Python peer ({fastest[0]}): {ours / fastest[1]:.2f}x")

    if not args.no_dns:
        latency = asyncio.run(_dns_latency(args.domains))
        print(f"\nvalidate() with DNS against the local NSD lab ({args.domains} domains)\n")
        print("| cache | p50 ms | p95 ms |")
        print("|---|---:|---:|")
        for label, (p50, p95) in latency.items():
            print(f"| {label} | {p50:.3f} | {p95:.3f} |")


if __name__ == "__main__":
    main()
