"""``bavlio`` command line: ``serve``, ``migrate`` and ``prospects import``.

Heavy modules are imported per command, so a bad setting is reported before any of them load.

Exit codes: 0 success, 1 some import rows were rejected (and reported), 2 bad settings, bad
arguments or an unreadable file (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")

    prospects = commands.add_parser("prospects", help="manage the prospect pool")
    sub = prospects.add_subparsers(dest="action", required=True)
    importer = sub.add_parser("import", help="import prospects from CSV, JSON or JSON Lines")
    importer.add_argument("file", type=Path)
    importer.add_argument("--format", choices=FORMATS, help="default: from the file extension")
    importer.add_argument("--rejects", type=Path, help="write rejected rows here (JSON Lines)")
    importer.add_argument("--config", help="TOML settings file (default: BAVLIO_CONFIG)")
    return parser


def _serve(settings: Settings) -> int:
    import uvicorn

    from server.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


async def _migrate(settings: Settings) -> None:
    from server.db.engine import Database

    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        await db.migrate()
    finally:
        await db.dispose()


async def _import(settings: Settings, parsed: ParsedFile) -> int:
    from server.db.engine import Database
    from server.prospects.store import ProspectStore

    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        await db.migrate()
        return await ProspectStore(db).add([prospect for _, prospect in parsed.rows])
    finally:
        await db.dispose()


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    overrides = {}
    if args.command == "serve":
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except SettingsError as exc:
        print(f"bavlio: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from emailintel.errors import ConfigError

        try:
            return _serve(settings)
        except ConfigError as exc:  # emailintel's own variables (EMAILINTEL_*)
            print(f"bavlio: invalid emailintel setting: {exc}", file=sys.stderr)
            return 2
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("database is at the latest revision")
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
