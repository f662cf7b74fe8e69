"""The bavlio command line: migrate, prospects import, settings errors (exit 2, one line)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from server.cli import main
from server.db import Database
from server.db.migrate import current_revision, head_revision
from server.prospects.models import SearchRequest
from server.prospects.store import ProspectStore

GOOD_AND_BAD = """name,company,tags
Ada,Analytical,"ai;saas"
,Nameless,saas
Grace,Navy,ai
"""


@pytest.fixture
def db_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BAVLIO_DATABASE_URL", sqlite_url)
    return sqlite_url


async def _names(url: str, tags: list[str]) -> list[str]:
    db = Database(url)
    try:
        page = await ProspectStore(db).search(SearchRequest(tags=tags))
        return [p.name for p in page.data]
    finally:
        await db.dispose()


def test_migrate(db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    assert "latest revision" in capsys.readouterr().out

    async def revision() -> str | None:
        db = Database(db_env)
        try:
            async with db.engine.connect() as conn:
                return await conn.run_sync(current_revision)
        finally:
            await db.dispose()

    assert asyncio.run(revision()) == head_revision()


def _tables(url: str, schema: str | None = None) -> set[str]:
    async def names() -> set[str]:
        db = Database(url, schema=schema)
        try:
            async with db.engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names(schema)))
        finally:
            await db.dispose()

    return asyncio.run(names())


SERVER_TABLES = {"alembic_version", "prospects"}
LEDGER_TABLES = {"x402gw_alembic_version", "x402gw_payments"}


def test_migrate_builds_the_server_and_the_ledger_tables(db_env: str) -> None:
    assert main(["migrate"]) == 0
    assert _tables(db_env) >= SERVER_TABLES | LEDGER_TABLES


def test_migrate_builds_both_trees_on_postgresql(
    monkeypatch: pytest.MonkeyPatch, pg_schema: tuple[str, str]
) -> None:
    url, schema = pg_schema
    monkeypatch.setenv("BAVLIO_DATABASE_URL", url)
    monkeypatch.setenv("BAVLIO_DATABASE_SCHEMA", schema)
    assert main(["migrate"]) == 0
    assert _tables(url, schema) >= SERVER_TABLES | LEDGER_TABLES


MIGRATE = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
import server.db.engine, x402gw.ledger  # imported before the start signal
from server.cli import main

print("ready", flush=True)
while not os.path.exists(sys.argv[1]):  # start together
    time.sleep(0.001)
sys.exit(main(["migrate"]))
"""


def _start_together(env: dict[str, str], cwd: Path, count: int = 8) -> None:
    go = cwd / "go"
    root = str(Path(__file__).resolve().parents[2])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, str(go), root],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:  # every one imported and waiting for the signal
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-1500:]
        assert "latest revision" in out


def test_processes_starting_together_migrate_one_new_sqlite_file(tmp_path: Path) -> None:
    """Worker processes on one new database file each migrate at start; every one succeeds."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAVLIO_")}
    _start_together({**env, "BAVLIO_DATABASE_URL": url}, tmp_path)
    assert _tables(url) >= SERVER_TABLES | LEDGER_TABLES


def test_processes_starting_together_migrate_one_new_postgresql_schema(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_schema
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAVLIO_")}
    _start_together({**env, "BAVLIO_DATABASE_URL": url, "BAVLIO_DATABASE_SCHEMA": schema}, tmp_path)
    assert _tables(url, schema) >= SERVER_TABLES | LEDGER_TABLES


def test_import_reports_and_keeps_rejects(
    db_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "people.csv"
    source.write_text(GOOD_AND_BAD)
    rejects = tmp_path / "rejects.jsonl"
    assert main(["prospects", "import", str(source), "--rejects", str(rejects)]) == 1
    out, err = capsys.readouterr()
    assert "imported 2 prospects, rejected 1 rows" in out
    assert err.startswith("row 3: name:")
    [record] = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert record["row"] == 3
    assert record["raw"] == {"name": "", "company": "Nameless", "tags": "saas"}
    assert asyncio.run(_names(db_env, ["ai"])) == ["Grace", "Ada"]  # Grace: only "ai", score 1


def test_import_all_good_json(db_env: str, tmp_path: Path) -> None:
    source = tmp_path / "people.json"
    source.write_text(json.dumps([{"name": "Linus", "tags": ["os", "c"]}]))
    assert main(["prospects", "import", str(source)]) == 0
    assert asyncio.run(_names(db_env, ["C"])) == ["Linus"]


def test_import_unreadable_file_is_exit_2(
    db_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prospects", "import", str(tmp_path / "absent.csv")]) == 2
    assert capsys.readouterr().err.startswith("bavlio: cannot read")


def test_import_into_postgresql(
    monkeypatch: pytest.MonkeyPatch, pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_schema
    monkeypatch.setenv("BAVLIO_DATABASE_URL", url)
    monkeypatch.setenv("BAVLIO_DATABASE_SCHEMA", schema)
    source = tmp_path / "people.csv"
    source.write_text(GOOD_AND_BAD)
    assert main(["prospects", "import", str(source)]) == 1

    async def count() -> int:
        db = Database(url, schema=schema)
        try:
            async with db.engine.connect() as conn:
                return int(
                    (await conn.execute(text("SELECT COUNT(*) FROM prospects"))).scalar_one()
                )
        finally:
            await db.dispose()

    assert asyncio.run(count()) == 2


def test_bad_setting_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAVLIO_NETWORK", "eip155")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (
        "bavlio: invalid setting BAVLIO_NETWORK: must be a CAIP-2 chain id such as eip155:8453\n"
    )


def test_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    variable = "BAVLIO_PORT"
    env = {**os.environ, variable: "http"}
    proc = subprocess.run(
        [sys.executable, "-m", "server", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"bavlio: invalid setting {variable}: ")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_bad_emailintel_variable_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "EMAILINTEL_NAMESERVERS": "not-an-ip"}
    proc = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--unpaid"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("bavlio: invalid emailintel setting: invalid nameserver")
    assert "Traceback" not in proc.stderr


def test_bad_config_flag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "BAVLIO_CONFIG" in capsys.readouterr().err


def test_cli_formats_match_the_importer() -> None:
    from server import cli
    from server.prospects import importer

    assert cli.FORMATS == importer.FORMATS


def test_serve_refuses_to_give_paid_routes_away(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("BAVLIO_SETTLER_KEY", "BAVLIO_FACILITATOR_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bavlio: payments are not configured")
    assert "--unpaid" in err
