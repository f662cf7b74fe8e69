"""Run py3-validate-email over a list of addresses against the mail lab, in threads.

Reads ``{"nameserver": "127.0.0.1:5353", "addresses": [...], "threads": 10, "helo": "...",
"skip_tls": false, "timeout": 10}`` as JSON on stdin and writes ``{"elapsed": s, "results":
[{"address", "result": true|false|null, "ms"}]}`` to stdout. The library has no resolver option,
so DNS is patched in this process only: dnspython's default resolver asks the lab NSD and
``socket.getaddrinfo`` resolves names through it, returning loopback addresses only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.exception
import dns.resolver

os.environ["PY3VE_IGNORE_UPDATER"] = "1"  # else importing validate_email downloads a blocklist

_real_getaddrinfo = socket.getaddrinfo


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def patch_dns(nameserver: str) -> dns.resolver.Resolver:
    """Point dnspython and ``socket.getaddrinfo`` at the lab NSD; nothing leaves 127.0.0.0/8."""
    host, _, port = nameserver.rpartition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)
    resolver.cache = dns.resolver.LRUCache()  # a long-running user process would cache too
    dns.resolver.default_resolver = resolver

    def lab_getaddrinfo(
        name: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        text = name.decode() if isinstance(name, bytes) else str(name)
        if _is_ip(text):
            return _real_getaddrinfo(text, port, family, type, proto, flags)
        try:
            answer = resolver.resolve(text.rstrip("."), "A", search=False)
        except dns.exception.DNSException as exc:
            raise socket.gaierror(socket.EAI_NONAME, f"{text}: {exc}") from None
        found = [r.address for r in answer if ipaddress.ip_address(r.address).is_loopback]
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{text}: no loopback address in the lab")
        out = []
        for address in found:
            out += _real_getaddrinfo(
                address, port, socket.AF_INET, type, proto, flags | socket.AI_NUMERICHOST
            )
        return out

    def refuse(*_: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "system resolver disabled in the lab runner")

    socket.getaddrinfo = lab_getaddrinfo  # type: ignore[assignment]
    socket.gethostbyname = refuse
    socket.gethostbyname_ex = refuse
    socket.gethostbyaddr = refuse
    return resolver


def main() -> None:
    """Validate every address from the JSON on stdin and print timings and answers as JSON."""
    job = json.load(sys.stdin)
    patch_dns(job["nameserver"])
    from validate_email import validate_email  # type: ignore[import-untyped]

    def check(address: str) -> dict[str, Any]:
        start = time.perf_counter()
        result = validate_email(
            email_address=address,
            check_blacklist=True,
            check_dns=True,
            check_smtp=True,
            dns_timeout=job.get("timeout", 10),
            smtp_timeout=job.get("timeout", 10),
            smtp_helo_host=job["helo"],
            smtp_skip_tls=job.get("skip_tls", False),
        )
        return {"address": address, "result": result, "ms": (time.perf_counter() - start) * 1e3}

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=int(job.get("threads", 10))) as pool:
        results = list(pool.map(check, job["addresses"]))
    elapsed = time.perf_counter() - start
    json.dump({"elapsed": elapsed, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
