"""Exactly once under races and crashes, on SQLite and PostgreSQL: two sequencers ticking the
same campaign at the same time, and sequencer processes killed with SIGKILL mid-run and
restarted, queue every (lead, step) exactly once, and no outbox message without its claim."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from factory import StepSpec, make_campaign, make_user
from sequencer_support import Clock, make_aliases, sequencer

from server.db.engine import Database
from server.db.models import Campaign, CampaignLead, CampaignSend, MailMessage
from server.settings import Settings

GUARD = 240.0  # seconds: a hang guard, not a timing assertion
HERE = Path(__file__).parent


async def _campaign(db: Database, leads: int, now: float, delay: int) -> Any:
    user = await make_user(db)
    aliases = await make_aliases(db, user, locals_=("a", "b", "c"))
    return await make_campaign(
        db,
        user_id=user,
        status="active",
        lead_status="active",
        due_at=now,
        sender_alias_ids=aliases,
        steps=(StepSpec(0), StepSpec(delay), StepSpec(delay)),
        leads=[{"email": f"r{i}@dest.test"} for i in range(leads)],
        now=now,
    )


async def _check_exactly_once(db: Database, leads: int, steps: int) -> dict[str, int]:
    """Every (lead, step) claimed once, each claim's message present, no message unclaimed."""
    async with db.engine.connect() as conn:
        sends = (await conn.execute(sa.select(CampaignSend.lead_id, CampaignSend.position))).all()
        claimed = (await conn.execute(sa.select(CampaignSend.email_id))).scalars().all()
        messages = (await conn.execute(sa.select(MailMessage.id))).scalars().all()
        states = dict(
            (
                await conn.execute(
                    sa.select(CampaignLead.status, sa.func.count()).group_by(CampaignLead.status)
                )
            ).all()
        )
    assert len(sends) == len(set(sends)) == leads * steps
    assert sorted(claimed) == sorted(messages)
    assert len(set(messages)) == leads * steps
    return {str(k): int(v) for k, v in states.items()}


async def test_two_sequencers_racing(backend_settings: Settings) -> None:
    """Two sequencers (own connection pools) tick together until the campaign completes."""
    clock = Clock()
    dbs = [
        Database(backend_settings.database_url, schema=backend_settings.database_schema)
        for _ in range(2)
    ]
    await dbs[0].migrate()
    try:
        await _campaign(dbs[0], 120, clock.now, 3600)
        seqs = [sequencer(db, clock, batch=40) for db in dbs]
        lost = 0
        for _ in range(3):
            for _ in range(6):
                reports = await asyncio.gather(*(s.tick() for s in seqs))
                lost += sum(r.lost for r in reports)
            clock.advance(3600)
        states = await _check_exactly_once(dbs[0], 120, 3)
        assert states == {"completed": 120}
        async with dbs[0].engine.connect() as conn:
            status = (await conn.execute(sa.select(Campaign.status))).scalar_one()
        assert status == "completed"
        print(f"\n{dbs[0].dialect}: claims lost to the other sequencer: {lost}")
    finally:
        for db in dbs:
            await db.dispose()


def _start(settings: Settings, stop: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    paths = [str(HERE), str(HERE.parent), os.getcwd(), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                str(HERE / "sequencer_proc.py"),
                settings.database_url,
                settings.database_schema or "",
                str(stop),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _sends(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(CampaignSend))).scalar_one()
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _wait_for(db: Database, target: int, log: Path) -> None:
    deadline = time.monotonic() + GUARD
    while await _sends(db) < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"stuck below {target}: {_tail(log)}")
        await asyncio.sleep(0.05)


async def test_kill_9_mid_run_queues_each_step_once(
    backend_settings: Settings, tmp_path: Path
) -> None:
    """Two sequencer processes race; one is SIGKILLed mid-run twice and restarted; then both
    finish: each of 3 x 150 (lead, step) pairs is queued exactly once."""
    leads = 150
    db = Database(backend_settings.database_url, schema=backend_settings.database_schema)
    await db.migrate()
    stop = tmp_path / "stop"
    log = tmp_path / "seq.log"
    try:
        await _campaign(db, leads, time.time(), 0)
        steady = _start(backend_settings, stop, log)
        try:
            for target in (60, 200):
                victim = _start(backend_settings, stop, log)
                try:
                    await _wait_for(db, target, log)
                finally:
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(timeout=30)
                assert victim.returncode == -signal.SIGKILL
            victim = _start(backend_settings, stop, log)
            await _wait_for(db, leads * 3, log)
        finally:
            stop.touch()
            for proc in (steady, victim):
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        states = await _check_exactly_once(db, leads, 3)
        assert states == {"completed": leads}
    finally:
        await db.dispose()
