"""``bavlio`` command line: ``serve``, ``dev``, ``pay``, ``migrate``, ``worker``,
``prospects import``, ``users create`` and ``credits grant``.

Heavy modules are imported per command, so a bad setting is reported before any of them load.

Exit codes: 0 success, 1 some import rows were rejected (and reported) or a paid call answered
an error, 2 bad settings, bad arguments, an unreadable file or a payment that could not be made
(one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from server.recursion import restore_recursion_limit
from server.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from server.prospects.importer import ParsedFile

FORMATS = ("csv", "json", "jsonl")  # as in server.prospects.importer, without importing it

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bavlio", description="Bavlio server.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server (uvicorn)")
    serve.add_argument("--host", help="listen address (default: BAVLIO_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: BAVLIO_PORT or 8000)")
    serve.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")
    serve.add_argument(
        "--unpaid",
        action="store_true",
        help="serve the paid routes without payment (local testing only; refused otherwise "
        "unless BAVLIO_SETTLER_KEY or BAVLIO_FACILITATOR_URL is set)",
    )

    mcp = commands.add_parser(
        "mcp",
        help="serve the API-action MCP tools on stdio (the key comes from BAVLIO_API_KEY)",
    )
    mcp.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")

    dev = commands.add_parser(
        "dev", help="run a local stack: anvil, a demo token and wallet, the server with payments"
    )
    dev.add_argument("--port", type=int, default=8402, help="server port (default: 8402)")
    dev.add_argument(
        "--state-dir", type=Path, default=Path(".bavlio-dev"), help="database and env file"
    )
    dev.add_argument(
        "--check", action="store_true", help="self-test: start, pay one call, print it, stop"
    )

    pay = commands.add_parser("pay", help="call an x402-paid URL, paying with BAVLIO_PAYER_KEY")
    pay.add_argument("method", help="HTTP method, e.g. POST")
    pay.add_argument("url", help="the paid URL")
    pay.add_argument("json", nargs="?", help="JSON request body")
    pay.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header too, e.g. 'Authorization: Bearer bav_live_…' (repeatable)",
    )
    pay.add_argument(
        "--max-amount",
        type=int,
        default=1_000_000,
        help="refuse to pay more atomic units than this (default: 1000000)",
    )

    migrate = commands.add_parser(
        "migrate", help="apply database migrations (server tables and the payment ledger)"
    )
    migrate.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")

    worker = commands.add_parser(
        "worker", help="run background jobs (find, verify, bulk, datasets, leads) until SIGTERM"
    )
    worker.add_argument(
        "--concurrency", type=int, help="jobs run at once (default: BAVLIO_WORKER_CONCURRENCY or 4)"
    )
    worker.add_argument(
        "--handlers",
        help="comma-separated module:function registering job kinds "
        "(default: BAVLIO_JOB_HANDLERS or server.jobs.kinds:register)",
    )
    worker.add_argument(
        "--egress",
        metavar="ADDRESS",
        help="local address this worker's SMTP probes leave from "
        "(default: BAVLIO_SMTP_SOURCE_ADDRESS or the system's choice)",
    )
    worker.add_argument(
        "--proxy",
        metavar="URL",
        help="socks5:// or socks4:// proxy for this worker's SMTP probes "
        "(default: BAVLIO_SMTP_PROXY or none)",
    )
    worker.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")

    mail_worker = commands.add_parser(
        "mail-worker", help="send BaviMail's queued messages through the relay until SIGTERM"
    )
    mail_worker.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")

    prospects = commands.add_parser("prospects", help="manage the prospect pool")
    sub = prospects.add_subparsers(dest="action", required=True)
    importer = sub.add_parser("import", help="import prospects from CSV, JSON or JSON Lines")
    importer.add_argument("file", type=Path)
    importer.add_argument("--format", choices=FORMATS, help="default: from the file extension")
    importer.add_argument("--rejects", type=Path, help="write rejected rows here (JSON Lines)")
    importer.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")

    users = commands.add_parser("users", help="manage users of the keyed API")
    users_sub = users.add_subparsers(dest="action", required=True)
    create = users_sub.add_parser(
        "create", help="create a user; prints its id and a session token (JSON)"
    )
    create.add_argument("email")
    create.add_argument("--plan", help="plan name (default: BAVLIO_DEFAULT_PLAN)")
    create.add_argument("--key", action="store_true", help="also create an API key")
    create.add_argument(
        "--scopes", default="*", help="comma-separated scopes of that key (default: *)"
    )
    create.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")

    credits = commands.add_parser("credits", help="manage credits")
    credits_sub = credits.add_subparsers(dest="action", required=True)
    grant = credits_sub.add_parser("grant", help="grant credits to a user (id or email)")
    grant.add_argument("user")
    grant.add_argument("amount", type=int)
    grant.add_argument("--reference", help="grant once per reference (default: a new one)")
    grant.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")
    return parser


def _serve(settings: Settings, *, unpaid: bool = False) -> int:
    import uvicorn

    from server.app import create_app
    from server.payments import gate_factory, payments_enabled
    from server.services import SMTP_ROUTES_LEFT_OUT, configured_prober

    if not payments_enabled(settings) and not unpaid:
        print(
            "bavlio: payments are not configured: set BAVLIO_SETTLER_KEY (settle locally) or "
            "BAVLIO_FACILITATOR_URL, or pass --unpaid to serve the paid routes for free",
            file=sys.stderr,
        )
        return 2
    gate = gate_factory(settings) if payments_enabled(settings) else None
    prober = configured_prober(settings=settings)
    config = uvicorn.Config(
        create_app(
            settings, payment_middleware=gate, prober=prober, smtp_routes=prober is not None
        ),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
    )
    if gate is None:
        print(
            "bavlio: warning: no BAVLIO_SETTLER_KEY or BAVLIO_FACILITATOR_URL; "
            "the paid routes are served without payment",
            file=sys.stderr,
        )
    if prober is None:
        print(f"bavlio: warning: {SMTP_ROUTES_LEFT_OUT}", file=sys.stderr)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


def _mcp(settings: Settings) -> int:
    """The MCP server on stdin/stdout over the app (its lifespan runs: migrations, workers);
    logs go to stderr, stdout carries only MCP messages."""
    import logging

    from mcp.server.stdio import stdio_server

    from server.app import create_app
    from server.payments import gate_factory, payments_enabled
    from server.services import configured_prober

    logging.basicConfig(stream=sys.stderr, level=settings.log_level.upper())
    gate = gate_factory(settings) if payments_enabled(settings) else None
    prober = configured_prober(settings=settings)
    app = create_app(
        settings, payment_middleware=gate, prober=prober, smtp_routes=prober is not None
    )

    async def run() -> None:
        server = app.state.mcp_server
        async with app.router.lifespan_context(app), stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    asyncio.run(run())
    return 0


async def _migrate(settings: Settings) -> None:
    """Every migration tree in the database: the server's tables and x402gw's payment ledger."""
    from server.db.engine import Database
    from x402gw.ledger import Ledger

    db = Database.from_settings(settings)
    try:
        await db.migrate()
    finally:
        await db.dispose()
    ledger = Ledger(settings.database_url, schema=settings.database_schema)
    try:
        await ledger.migrate()
    finally:
        await ledger.close()


async def _import(settings: Settings, parsed: ParsedFile) -> int:
    from server.db.engine import Database
    from server.prospects.store import ProspectStore

    db = Database.from_settings(settings)
    try:
        await db.migrate()
        return await ProspectStore(db).add([prospect for _, prospect in parsed.rows])
    finally:
        await db.dispose()


def _worker(settings: Settings) -> int:
    from emailintel.errors import ConfigError
    from server.jobs.cli import WorkerSetupError, run_worker

    try:
        asyncio.run(run_worker(settings))
    except WorkerSetupError as exc:
        print(f"bavlio worker: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # emailintel's own variables (EMAILINTEL_*) or the egress
        print(f"bavlio worker: invalid emailintel setting: {exc}", file=sys.stderr)
        return 2
    return 0


def _mail_worker(settings: Settings) -> int:
    from server.campaigns.sequencer import sequencer_loop
    from server.campaigns.stops import on_refused
    from server.mail.setup import run_mail_worker

    try:
        asyncio.run(run_mail_worker(settings, sequencer_loop, on_refused))
    except ValueError as exc:  # no relay configured
        print(f"bavlio mail-worker: {exc}", file=sys.stderr)
        return 2
    return 0


def _report(parsed: ParsedFile, imported: int, rejects: Path | None) -> int:
    for error in parsed.errors:
        print(f"row {error.row}: " + "; ".join(error.errors), file=sys.stderr)
    if rejects is not None and parsed.errors:
        with rejects.open("w", encoding="utf-8") as out:
            for error in parsed.errors:
                out.write(json.dumps(error.as_json(), ensure_ascii=False, default=str) + "\n")
    summary = f"imported {imported} prospects, rejected {len(parsed.errors)} rows"
    if rejects is not None and parsed.errors:
        summary += f" (written to {rejects})"
    print(summary)
    return 1 if parsed.errors else 0


def _dev(args: argparse.Namespace) -> int:
    from server.devstack import DevStackError, run_dev

    try:
        return run_dev(port=args.port, state_dir=args.state_dir, check=args.check)
    except (DevStackError, SettingsError) as exc:
        print(f"bavlio dev: {exc}", file=sys.stderr)
        return 2


def _pay(args: argparse.Namespace) -> int:
    from server.payclient import PayError, parse_header, pay, payer_key, receipt

    body = None
    if args.json is not None:
        try:
            json.loads(args.json)
        except ValueError as exc:
            print(f"bavlio pay: the body is not JSON: {exc}", file=sys.stderr)
            return 2
        body = args.json.encode()
    if not args.url.startswith(("http://", "https://")):
        print(f"bavlio pay: not an http(s) URL: {args.url}", file=sys.stderr)
        return 2
    try:
        headers = dict(parse_header(text) for text in args.header)
        key = payer_key()
        paid = asyncio.run(
            pay(
                args.method.upper(),
                args.url,
                body,
                key,
                max_amount=args.max_amount,
                headers=headers,
            )
        )
    except PayError as exc:
        print(f"bavlio pay: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(paid.body.decode("utf-8", "replace").rstrip("\n") + "\n")
    print(json.dumps(receipt(paid)), file=sys.stderr)
    return 0 if paid.status < 400 else 1


def _accounts(settings: Settings, args: argparse.Namespace) -> int:
    from server.accounts_cli import AccountCommandError, credits_grant, dumps, users_create

    try:
        if args.command == "users":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            out = asyncio.run(
                users_create(settings, args.email, plan=args.plan, key=args.key, scopes=scopes)
            )
        else:
            out = asyncio.run(
                credits_grant(settings, args.user, args.amount, reference=args.reference)
            )
    except AccountCommandError as exc:
        print(f"bavlio: {exc}", file=sys.stderr)
        return 2
    print(dumps(out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    restore_recursion_limit()  # every command may parse hostile JSON (``pay`` reads 402 bodies)
    args = _parser().parse_args(argv)
    if args.command == "dev":
        return _dev(args)
    if args.command == "pay":
        return _pay(args)
    overrides = {}
    if args.command == "serve":
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.command == "worker":
        flags = (
            ("worker_concurrency", args.concurrency),
            ("job_handlers", args.handlers),
            ("smtp_source_address", args.egress),
            ("smtp_proxy", args.proxy),
        )
        overrides = {k: v for k, v in flags if v is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except SettingsError as exc:
        print(f"bavlio: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from emailintel.errors import ConfigError

        try:
            return _serve(settings, unpaid=args.unpaid)
        except ConfigError as exc:  # emailintel's own variables (EMAILINTEL_*)
            print(f"bavlio: invalid emailintel setting: {exc}", file=sys.stderr)
            return 2
        except SettingsError as exc:  # a payment setting that is missing for the chosen mode
            print(f"bavlio: {exc}", file=sys.stderr)
            return 2
    if args.command == "mcp":
        return _mcp(settings)
    if args.command in ("users", "credits"):
        return _accounts(settings, args)
    if args.command == "worker":
        return _worker(settings)
    if args.command == "mail-worker":
        return _mail_worker(settings)
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("database is at the latest revision (server tables and payment ledger)")
        return 0

    from server.prospects.importer import ImportFileError, parse_file

    try:
        parsed = parse_file(args.file, args.format)
    except ImportFileError as exc:
        print(f"bavlio: {exc}", file=sys.stderr)
        return 2
    imported = asyncio.run(_import(settings, parsed))
    return _report(parsed, imported, args.rejects)


if __name__ == "__main__":
    sys.exit(main())
