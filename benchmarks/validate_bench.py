"""Validate benchmark: our offline path vs email-validator and py3-validate-email, on one core.

Run: ``.venv/bin/python -m benchmarks.validate_bench [--n 100000] [--no-dns]``. The same
generated addresses go through every implementation in one run; the table prints addresses/s
and our speed as a multiple of each peer's. With DNS on (the default) it also starts the NSD
lab from the test suite and reports ``validate()`` latency p50/p95, cold and warm cache.
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


PEERS: dict[str, Callable[[], Callable[[str], bool]]] = {
    "emailintel (offline)": _ours,
    "email-validator 2.x (check_deliverability=False)": _email_validator,
    "py3-validate-email (dns/smtp off)": _py3_validate_email,
}


def _throughput(fn: Callable[[str], bool], addresses: list[str]) -> tuple[float, int]:
    for address in addresses[:2000]:  # warm imports and caches the same way for everyone
        fn(address)
    start = time.perf_counter()
    accepted = sum(1 for address in addresses if fn(address))
    return len(addresses) / (time.perf_counter() - start), accepted


def offline_table(n: int) -> list[tuple[str, float, int]]:
    """Run every implementation over the same n addresses; (name, addresses/s, accepted)."""
    addresses = generate(n)
    rows = []
    for name, factory in PEERS.items():
        rate, accepted = _throughput(factory(), addresses)
        rows.append((name, rate, accepted))
    return rows


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
    parser.add_argument("--no-dns", action="store_true", help="skip the DNS latency part")
    parser.add_argument("--domains", type=int, default=200, help="lab domains for DNS latency")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for everyone

    rows = offline_table(args.n)
    ours = rows[0][1]
    print(f"\nvalidate, offline path: {args.n:,} generated addresses, one core\n")
    print("| implementation | addresses/s | accepted | emailintel speed-up |")
    print("|---|---:|---:|---:|")
    for name, rate, accepted in rows:
        print(f"| {name} | {rate:,.0f} | {accepted:,} | {ours / rate:.2f}x |")

    if not args.no_dns:
        latency = asyncio.run(_dns_latency(args.domains))
        print(f"\nvalidate() with DNS against the local NSD lab ({args.domains} domains)\n")
        print("| cache | p50 ms | p95 ms |")
        print("|---|---:|---:|")
        for label, (p50, p95) in latency.items():
            print(f"| {label} | {p50:.3f} | {p95:.3f} |")


if __name__ == "__main__":
    main()
