"""The ``emailintel`` command line: validate and verify addresses, find and pattern names."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO

from emailintel.dns import DnsResolver
from emailintel.errors import ConfigError, EmailIntelError
from emailintel.models import RiskResult
from emailintel.risk import RiskPolicy
from emailintel.smtp.prober import DEFAULT_RETRY_SCHEDULE, Prober
from emailintel.verify import RetryWait, Validator

__all__ = ["main"]

_ADDRESS_COLUMNS = ("email", "address", "email_address", "e-mail", "mail")


def _read_addresses(stream: TextIO) -> Iterator[str]:
    """Addresses from a CSV (a column named email/address, else the first) or one per line."""
    text = stream.read()
    if not text.strip():
        return
    sample = text[:4096]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(c) for c in _ADDRESS_COLUMNS if c in header), None)
    body = rows[1:] if column is not None else rows
    index = column or 0
    for row in body:
        if len(row) > index and row[index].strip():
            yield row[index].strip()


def _collect_inputs(args: argparse.Namespace, stdin: TextIO) -> tuple[list[str], bool]:
    """Addresses from the arguments, a file, or stdin; the flag says whether this is bulk input."""
    addresses = list(args.addresses)
    bulk = False
    if args.file:
        bulk = True
        if args.file == "-":
            addresses.extend(_read_addresses(stdin))
        else:
            with open(args.file, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
                addresses.extend(_read_addresses(f))
    elif not addresses and not stdin.isatty():
        bulk = True
        addresses.extend(_read_addresses(stdin))
    return addresses, bulk


def _reasons(result: RiskResult) -> str:
    return ",".join(result.reasons)


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")


def _emit_results(
    results: Iterable[RiskResult], fmt: str, out: TextIO, header: bool = True
) -> None:
    if fmt == "json":
        for result in results:
            out.write(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        if header:
            writer.writerow(["address", "normalized", "verdict", "score", "reasons", "suggestion"])
        for result in results:
            writer.writerow(
                [
                    result.address,
                    result.normalized or "",
                    result.verdict,
                    result.score,
                    _reasons(result),
                    result.suggestion or "",
                ]
            )
    else:
        rows = [["ADDRESS", "VERDICT", "SCORE", "REASONS", "SUGGESTION"]]
        rows += [
            [r.address, r.verdict, str(r.score), _reasons(r), r.suggestion or ""] for r in results
        ]
        _table(rows, out)


def _load_policy(path: str | None) -> RiskPolicy | None:
    """The risk policy in a JSON file (RiskPolicy.from_mapping keys), or None for the defaults."""
    if path is None:
        return None
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"policy file {path} is not valid JSON: {exc}") from None
    return RiskPolicy.from_mapping(data)


def _make_validator(args: argparse.Namespace) -> Validator:
    resolver = DnsResolver(args.nameserver) if args.nameserver else None
    return Validator(
        resolver=resolver, policy=_load_policy(args.policy), check_dns=not args.offline
    )


async def _run_validate(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    addresses, bulk = _collect_inputs(args, stdin)
    if not addresses:
        sys.stderr.write("emailintel validate: no addresses given (arguments, --file or stdin)\n")
        return 2
    validator = _make_validator(args)
    progress = None
    if bulk and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=len(addresses), unit="addr", file=sys.stderr)
    streaming = args.format in ("json", "csv")
    collected: list[RiskResult] = []
    first = True
    async for result in validator.validate_many(addresses, concurrency=args.concurrency):
        if progress is not None:
            progress.update(1)
        if streaming:
            _emit_results([result], args.format, out, header=first)
            first = False
        else:
            collected.append(result)
    if progress is not None:
        progress.close()
    if not streaming:
        _emit_results(collected, args.format, out)
    return 0


def _parse_known(items: Sequence[str]) -> list[tuple[str, str]]:
    known: list[tuple[str, str]] = []
    for item in items:
        address, sep, name = item.partition("=")
        if not sep or not address.strip() or not name.strip():
            raise argparse.ArgumentTypeError(f"--known expects ADDRESS=NAME, got {item!r}")
        known.append((address.strip(), name.strip()))
    return known


def _run_patterns(args: argparse.Namespace, out: TextIO) -> int:
    from emailintel.patterns import generate_candidates, infer_patterns

    known = _parse_known(args.known)
    candidates = generate_candidates(
        args.name,
        args.domain,
        company_size=args.company_size,
        known=known,
        nicknames=not args.no_nicknames,
        limit=args.limit,
    )
    if args.json:
        for candidate in candidates:
            out.write(json.dumps(candidate.model_dump(mode="json"), ensure_ascii=False) + "\n")
        return 0
    if known:
        dist = infer_patterns(known, domain=args.domain, company_size=args.company_size)
        shares = ", ".join(f"{p.pattern} {p.percentage:.1f}%" for p in dist.patterns[:5])
        out.write(f"domain patterns ({dist.matched}/{dist.observations} known matched): {shares}\n")
    rows = [["#", "EMAIL", "PROBABILITY", "PATTERN", "VARIANT"]]
    rows += [
        [str(i), c.email, f"{c.probability:.4f}", c.pattern, c.variant]
        for i, c in enumerate(candidates, 1)
    ]
    _table(rows, out)
    return 0


def _run_linkedin(args: argparse.Namespace, out: TextIO) -> int:
    from emailintel.search import engine_from_env, find_linkedin

    async def run() -> int:
        async with engine_from_env(backend=args.backend) as engine:
            result = await find_linkedin(
                args.name,
                args.company,
                title=args.title,
                location=args.location,
                engine=engine,
                limit=args.limit,
            )
        if args.json:
            out.write(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) + "\n")
            return 0 if result.best else 1
        if not result.matches:
            out.write(f"no match for {args.name!r} at {args.company!r} ")
            out.write(f"(threshold {result.threshold:.2f}, {len(result.queries)} queries)\n")
            shown = result.candidates
            if shown:
                out.write("closest candidates below the threshold:\n")
        else:
            shown = result.matches
        rows = [["#", "SCORE", "URL", "SLUG", "NAME", "COMPANY", "AMBIGUITY", "QUERY"]]
        rows += [
            [
                str(i),
                f"{c.score:.3f}",
                c.url,
                f"{c.evidence.slug_similarity:.2f}",
                f"{c.evidence.name_in_title:.2f}",
                f"{c.evidence.company_match:.2f}",
                f"-{c.evidence.ambiguity_penalty:.2f}",
                c.evidence.query,
            ]
            for i, c in enumerate(shown, 1)
        ]
        if shown:
            _table(rows, out)
        return 0 if result.matches else 1

    return asyncio.run(run())


# --- SMTP: verify and find -------------------------------------------------------------------


def _smtp_options(parser: argparse.ArgumentParser) -> None:
    smtp = parser.add_argument_group("SMTP probing")
    smtp.add_argument("--helo", help="your own FQDN for EHLO (default EMAILINTEL_HELO)")
    smtp.add_argument("--mail-from", help="your own envelope sender (default EMAILINTEL_MAIL_FROM)")
    smtp.add_argument("--null-sender", action="store_true", help="use MAIL FROM:<>")
    smtp.add_argument(
        "--force-identity", action="store_true", help="allow a HELO/sender that looks borrowed"
    )
    smtp.add_argument(
        "--allow-private-mx",
        action="store_true",
        help="dial MX hosts on private/loopback addresses (labs only)",
    )
    smtp.add_argument(
        "--nameserver",
        action="append",
        help="DNS server as HOST[:PORT] (repeatable; default EMAILINTEL_NAMESERVERS)",
    )
    smtp.add_argument("--port", type=int, default=25, help="SMTP port (default 25)")
    smtp.add_argument("--no-starttls", action="store_true", help="never upgrade to TLS")
    smtp.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per SMTP command (default 10)"
    )
    smtp.add_argument(
        "--banner-timeout", type=float, default=30.0, help="seconds to wait for the greeting"
    )
    smtp.add_argument("--proxy", help="SOCKS proxy URL for every MX (socks5://host:port)")
    smtp.add_argument(
        "--source-address", metavar="IP", help="local address to connect from (multi-homed hosts)"
    )


def _make_prober(args: argparse.Namespace) -> Prober:
    from emailintel.smtp.proxies import ProxyConfig
    from emailintel.smtp.session import Timeouts

    delays = getattr(args, "retry_delays", None)
    return Prober(
        retry_schedule=DEFAULT_RETRY_SCHEDULE if delays is None else delays,
        helo=args.helo,
        mail_from=args.mail_from,
        null_sender=args.null_sender,
        force=args.force_identity,
        allow_private_mx=True if args.allow_private_mx else None,
        port=args.port,
        starttls="never" if args.no_starttls else "opportunistic",
        timeouts=Timeouts(connect=args.timeout, banner=args.banner_timeout, command=args.timeout),
        proxies=ProxyConfig(default=args.proxy),
        preflight_target=getattr(args, "preflight", None),
        source_address=args.source_address,
    )


_VERIFY_COLUMNS = (
    "address", "normalized", "verdict", "score", "reasons", "suggestion",
    "mx_host", "smtp_code", "smtp_enhanced_code", "smtp_message",
)  # fmt: skip


def _verify_row(result: RiskResult) -> list[str | int]:
    smtp = result.smtp
    reply = smtp.reply if smtp else None
    return [
        result.address,
        result.normalized or "",
        result.verdict,
        result.score,
        _reasons(result),
        result.suggestion or "",
        (smtp.mx_host if smtp else None) or "",
        reply.code if reply and reply.code is not None else "",
        (reply.enhanced_code if reply else None) or "",
        (reply.message if reply else "").replace("\n", " "),
    ]


def _run_verify(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    addresses, bulk = _collect_inputs(args, stdin)
    if not addresses:
        sys.stderr.write("emailintel verify: no addresses given (arguments, --file or stdin)\n")
        return 2
    prober = _make_prober(args)
    if not args.output:
        return asyncio.run(_verify_to(args, addresses, bulk, prober, out))
    with open(args.output, "w", encoding="utf-8", errors="backslashreplace", newline="") as sink:
        return asyncio.run(_verify_to(args, addresses, bulk, prober, sink))


async def _verify_to(
    args: argparse.Namespace,
    addresses: list[str],
    bulk: bool,
    prober: Prober,
    sink: TextIO,
) -> int:
    """Verify and write each result to ``sink`` as soon as it is final."""
    from emailintel.verify import verify_many

    validator = Validator(
        resolver=DnsResolver(args.nameserver) if args.nameserver else None,
        policy=_load_policy(args.policy),
    )
    progress = None
    if bulk and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=len(addresses), unit="addr", file=sys.stderr)
    # Addresses typed on the command line answer at once; file runs wait for greylisting.
    retry = args.retry or (bulk and not args.no_retry)
    write = _row_writer(args.format, sink, addresses)
    try:
        async for result in verify_many(
            addresses,
            prober=prober,
            validator=validator,
            checkpoint=args.checkpoint,
            concurrency=args.concurrency,
            retry_greylisted=retry,
            on_retry_wait=_RetryBoard(progress, sys.stderr),
        ):
            if progress is not None:
                progress.update(1)
            write(result)
            sink.flush()
    finally:
        if progress is not None:
            progress.close()
    return 0


def _row_writer(fmt: str, sink: TextIO, addresses: Sequence[str]) -> Callable[[RiskResult], None]:
    """A function writing one result row in ``fmt`` (after the header), as each result comes."""
    writer = csv.writer(sink)
    # The table is streamed too: the address column fits the longest input address.
    widths = (max(len("ADDRESS"), *(len(a) for a in addresses)), 7, 5, 40)

    def table_row(cells: Sequence[str]) -> None:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        sink.write("  ".join([*padded, *cells[len(widths) :]]).rstrip() + "\n")

    def write(result: RiskResult) -> None:
        if fmt == "json":
            sink.write(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) + "\n")
        elif fmt == "csv":
            writer.writerow(_verify_row(result))
        else:
            r = result
            table_row([r.address, r.verdict, str(r.score), _reasons(r), r.suggestion or ""])

    if fmt == "csv":
        writer.writerow(_VERIFY_COLUMNS)
    elif fmt != "json":
        table_row(["ADDRESS", "VERDICT", "SCORE", "REASONS", "SUGGESTION"])
    return write


class _RetryBoard:
    """Greylisted addresses waiting for a retry: on the progress bar, else a line on stderr."""

    def __init__(self, progress: Any, err: TextIO) -> None:
        self._progress = progress
        self._err = err
        self._waits: dict[str, tuple[int, float]] = {}

    def __call__(self, wait: RetryWait) -> None:
        if wait.waiting and wait.retry_at is not None:
            self._waits[wait.domain] = (wait.waiting, wait.retry_at)
        else:
            self._waits.pop(wait.domain, None)
        text = ""
        if self._waits:
            count = sum(n for n, _ in self._waits.values())
            at = time.strftime("%H:%M:%S", time.localtime(min(t for _, t in self._waits.values())))
            text = f"{count} greylisted, next retry at {at}"
        if self._progress is not None:
            self._progress.set_postfix_str(text)
        elif text:
            self._err.write(f"emailintel verify: {text}\n")
            self._err.flush()


def _delays(text: str) -> tuple[float, ...]:
    """``--retry-delays``: comma-separated positive numbers of seconds."""
    try:
        delays = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds like 60,300,900, got {text!r}"
        ) from None
    if not all(0 < delay < 86400 for delay in delays):
        raise argparse.ArgumentTypeError(f"retry delays must be 0 < s < 86400, got {text!r}")
    return delays


def _split_name(name: str) -> tuple[str, str | None, str]:
    parts = name.split()
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f"find needs a first and last name, got {name!r}")
    middle = " ".join(parts[1:-1]) or None
    return parts[0], middle, parts[-1]


def _run_find(args: argparse.Namespace, out: TextIO) -> int:
    from emailintel.finder import Finder

    first, middle, last = _split_name(args.name)

    async def run() -> int:
        finder = Finder(
            prober=_make_prober(args),
            resolver=DnsResolver(args.nameserver) if args.nameserver else None,
            **({} if args.limit is None else {"max_candidates": args.limit}),
        )
        result = await finder.find(first, last, args.domain, middle=middle)
        if args.json:
            out.write(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) + "\n")
            return 0 if result.found else 1
        if result.found:
            out.write(f"found {result.email} (pattern {result.pattern})\n")
        else:
            out.write(f"not found: {','.join(result.reasons)}\n")
        rows = [["#", "EMAIL", "PROBABILITY", "PATTERN", "SMTP"]]
        for i, c in enumerate(result.candidates, 1):
            reply = c.smtp.reply if c.smtp else None
            status = (
                "not probed"
                if c.smtp is None
                else (f"{reply.code} {reply.enhanced_code or ''}".strip() if reply else "no reply")
            )
            prior = "" if c.probability is None else f"{c.probability:.4f}"
            rows.append([str(i), c.email, prior, c.pattern or "", status])
        _table(rows, out)
        return 0 if result.found else 1

    return asyncio.run(run())


def _add_bulk_io(parser: argparse.ArgumentParser, what: str) -> None:
    """Address arguments, --file bulk input, and the table/--json/--csv output choice."""
    parser.add_argument("addresses", nargs="*", help=what)
    parser.add_argument("--file", "-f", help="CSV or one-address-per-line file; '-' for stdin")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json", dest="format", action="store_const", const="json", help="one JSON object per line"
    )
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV output")
    parser.set_defaults(format="table")
    parser.add_argument(
        "--policy", metavar="FILE", help="risk policy as JSON (weights, base, valid_threshold, ...)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="emailintel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    val = sub.add_parser("validate", help="syntax, lists, typo and DNS checks (no SMTP)")
    _add_bulk_io(val, "addresses to check")
    val.add_argument("--offline", action="store_true", help="no DNS: syntax, lists and typo only")
    val.add_argument(
        "--nameserver",
        action="append",
        help="DNS server as HOST[:PORT] (repeatable; default EMAILINTEL_NAMESERVERS)",
    )
    val.add_argument("--concurrency", type=int, default=64, help="lookups in flight (default 64)")

    pat = sub.add_parser("patterns", help="candidate addresses for a person at a domain")
    pat.add_argument("name", help='full name, e.g. "Jane Doe"')
    pat.add_argument("domain", help="company mail domain")
    pat.add_argument(
        "--known",
        action="append",
        default=[],
        metavar="ADDRESS=NAME",
        help="a known address at the domain and its owner (repeatable)",
    )
    pat.add_argument("--company-size", type=int, help="employees, to condition the priors")
    pat.add_argument("--limit", type=int, help="at most this many candidates")
    pat.add_argument("--no-nicknames", action="store_true", help="skip nickname variants")
    pat.add_argument("--json", action="store_true", help="one JSON object per line")

    lin = sub.add_parser(
        "linkedin", help="find a person's LinkedIn profile URL via web search (exit 1: no match)"
    )
    lin.add_argument("name", help='full name, e.g. "Jane Doe"')
    lin.add_argument("--company", required=True, help="current employer")
    lin.add_argument("--title", help="job title, to narrow the search")
    lin.add_argument("--location", help="city or region, to narrow the search")
    lin.add_argument(
        "--backend",
        choices=["duckduckgo", "searxng", "brave"],
        help="search backend (default EMAILINTEL_SEARCH_BACKEND, else duckduckgo)",
    )
    lin.add_argument("--limit", type=int, default=5, help="at most this many candidates")
    lin.add_argument("--json", action="store_true", help="the whole result as one JSON object")
    ver = sub.add_parser("verify", help="validate plus an SMTP mailbox probe (RCPT TO)")
    _add_bulk_io(ver, "addresses to verify")
    ver.add_argument("--output", "-o", help="write results to this file instead of stdout")
    ver.add_argument(
        "--checkpoint", help="JSONL file: skip addresses already in it, append new results"
    )
    ver.add_argument("--concurrency", type=int, default=16, help="domains in flight (default 16)")
    retry = ver.add_mutually_exclusive_group()
    retry.add_argument(
        "--retry",
        action="store_true",
        help="wait to retry greylisted addresses given as arguments (file runs always do)",
    )
    retry.add_argument(
        "--no-retry", action="store_true", help="never wait to retry greylisting (file runs too)"
    )
    ver.add_argument(
        "--retry-delays",
        type=_delays,
        metavar="SECONDS[,SECONDS...]",
        help="greylisting retry schedule (default 60,300,900)",
    )
    ver.add_argument(
        "--preflight", metavar="HOST[:PORT]", help="check port 25 against this host first"
    )
    _smtp_options(ver)

    fnd = sub.add_parser("find", help="find a person's address at a domain (exit 1: not found)")
    fnd.add_argument("name", help='full name, e.g. "Jane Doe"')
    fnd.add_argument("domain", help="company mail domain")
    fnd.add_argument(
        "--limit",
        type=int,
        help="candidates to probe at most (default 30: 10, then 20 more once the domain has"
        " refused all 10 as unknown mailboxes; a catch-all stops at the first accept)."
        " Learned patterns persist in EMAILINTEL_PATTERN_CACHE (an SQLite file) when set",
    )
    fnd.add_argument("--json", action="store_true", help="the whole result as one JSON object")
    _smtp_options(fnd)
    return parser


def _tolerate_bad_bytes() -> None:
    """Undecodable input bytes become lone surrogates, which the parser answers as invalid rows;
    output escapes them (``\\udcff``) so it stays valid UTF-8 (and valid JSON)."""
    for stream, errors in (
        (sys.stdin, "surrogateescape"),
        (sys.stdout, "backslashreplace"),
        (sys.stderr, "backslashreplace"),
    ):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emailintel`` console script."""
    _tolerate_bad_bytes()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            if args.concurrency < 1:
                parser.error("--concurrency must be at least 1")
            return asyncio.run(_run_validate(args, sys.stdin, sys.stdout))
        if args.command == "linkedin":
            return _run_linkedin(args, sys.stdout)
        if args.command == "verify":
            if args.concurrency < 1:
                parser.error("--concurrency must be at least 1")
            return _run_verify(args, sys.stdin, sys.stdout)
        if args.command == "find":
            return _run_find(args, sys.stdout)
        return _run_patterns(args, sys.stdout)
    except (EmailIntelError, argparse.ArgumentTypeError) as exc:
        sys.stderr.write(f"emailintel {args.command}: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"emailintel {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
