"""Scale-out: two ``bavlio serve`` and two ``bavlio worker`` processes on one PostgreSQL and one
Redis verify 2,000 addresses against the mail lab in one bulk job; one worker is killed with
SIGKILL mid-job. The job still succeeds, every row is completed once (never twice) and the
credits captured are exactly one per row answered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from lab.dnslab import DnsLab
from lab.maillab import Listener, MailDomain, MailLab
from lab.mailstack import mail_stack
from processes import run_cli_json, serving_process

from server.billing.pricing import DEFAULT_PRICES, credits_for
from server.cli import main

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
USERS = 1000
ROWS = 2000
KILL_AFTER = 400  # rows done when one worker is killed
GRANT = 2500
# 1 credit per row at the volume discount of the dataset price (what the terminal hook captures)
PRICE = credits_for(DEFAULT_PRICES["email.dataset_verify"], ROWS).total


@pytest.fixture(scope="module")
def scale_lab() -> Iterator[DnsLab]:
    lab = MailLab(
        listeners=[Listener("main", "mx.scale.test", 2, "bench")],
        domains=[MailDomain("scale.test", users=tuple(f"user{i:04d}" for i in range(USERS)))],
        in_flow_delay="0",
        tls=False,
    )
    with mail_stack(lab) as (_, dns):
        yield dns


def _env(url: str, schema: str, dns: DnsLab) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BAVLIO_", "EMAILINTEL_"))},
        "BAVLIO_DATABASE_URL": url,
        "BAVLIO_DATABASE_SCHEMA": schema,
        "BAVLIO_REDIS_URL": "redis://127.0.0.1:6379/0",
        "BAVLIO_JWT_SECRET": "p" * 40,
        "BAVLIO_KEY_SECRET": "k" * 40,
        "BAVLIO_PLANS": '{"paid": {"rate_limit": "100000/minute"}}',
        "BAVLIO_EMBEDDED_WORKER": "false",
        "EMAILINTEL_NAMESERVERS": dns.nameserver,
        "EMAILINTEL_HELO": "probe.verifier-lab.test",
        "EMAILINTEL_MAIL_FROM": "bounce@verifier-lab.test",
        "EMAILINTEL_ALLOW_PRIVATE_MX": "1",
    }


@contextlib.contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m server worker`` with lab politeness; SIGTERM afterwards if still running."""
    worker_env = {
        **env,
        "BAVLIO_JOB_HANDLERS": "scaleout_handlers:register",
        "BAVLIO_JOB_LEASE_SECONDS": "3",
        "BAVLIO_JOB_POLL_SECONDS": "0.1",
        "BAVLIO_WORKER_CONCURRENCY": "4",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "worker"],
            env=worker_env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _progress(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> dict[str, object]:
    response = await client.get(url + "?include_rows=false", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_two_servers_two_workers_one_killed_verify_2000_rows_once(
    pg_schema: tuple[str, str],
    scale_lab: DnsLab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, schema = pg_schema
    env = _env(url, schema, scale_lab)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "bavlio.toml"
    config.write_text("")
    assert await asyncio.to_thread(main, ["migrate", "--config", str(config)]) == 0
    valid = [f"user{i:04d}@scale.test" for i in range(USERS)]
    invalid = [f"nobody{i:04d}@scale.test" for i in range(ROWS - USERS)]
    emails = [e for pair in zip(valid, invalid, strict=True) for e in pair]
    with (
        serving_process(tmp_path, config, env, tmp_path / "one.log") as (one, _),
        serving_process(tmp_path, config, env, tmp_path / "two.log") as (two, _),
        _worker(env, tmp_path / "w1.log") as first,
        _worker(env, tmp_path / "w2.log") as second,
    ):
        made = await run_cli_json(["users", "create", "scale@x.test", "--plan", "paid", "--key"])
        await run_cli_json(
            ["credits", "grant", made["user_id"], str(GRANT), "--reference", "scale"]
        )
        headers = {"Authorization": f"Bearer {made['api_key']}"}
        async with httpx.AsyncClient(timeout=60) as client:
            accepted = await client.post(
                one + "/api/v1/email-verification/bulk", json={"emails": emails}, headers=headers
            )
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["credits_reserved"] == PRICE
            status = two + accepted.headers["location"]
            for _ in range(3000):  # a guard against hanging, not a timing assertion
                progress = await _progress(client, status, headers)
                if progress["progress"]["done"] >= KILL_AFTER:  # type: ignore[index]
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail((tmp_path / "w1.log").read_text()[-3000:])
            assert first.poll() is None, (tmp_path / "w1.log").read_text()[-3000:]
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=30) == -signal.SIGKILL
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 900  # a guard against hanging (loaded CI), not a timing check
            while loop.time() < deadline:
                progress = await _progress(client, status, headers)
                if progress["status"] in ("succeeded", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.1)
            assert progress["status"] == "succeeded", progress
            assert progress["progress"] == {  # a row completed twice would count twice
                "total": ROWS,
                "done": ROWS,
                "failed": 0,
                "skipped": 0,
                "fraction": 1.0,
            }
            for _ in range(600):
                balance = (
                    await client.get(one + "/api/v1/credits/balance", headers=headers)
                ).json()
                if balance["held_credits"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert (balance["used_credits"], balance["held_credits"]) == (PRICE, 0)
            assert balance["available_credits"] == GRANT - PRICE
            rows = (await client.get(status + "?limit=1000", headers=headers)).json()
        assert second.poll() is None, (tmp_path / "w2.log").read_text()[-3000:]
    assert rows["rows"], rows
    sync_url = url.replace("postgresql+asyncpg://", "postgresql://")
    job_id = accepted.json()["job_id"]
    with psycopg.connect(sync_url) as conn:
        states = conn.execute(
            f"SELECT state, count(*) FROM {schema}.job_items WHERE job_id = %s GROUP BY state",
            (job_id,),
        ).fetchall()
        verdicts: dict[str, str] = dict(
            conn.execute(
                f"SELECT input #>> '{{}}', result->>'verdict' FROM {schema}.job_items "
                "WHERE job_id = %s",
                (job_id,),
            ).fetchall()
        )
        retried = conn.execute(
            f"SELECT count(*) FROM {schema}.job_items WHERE job_id = %s AND attempts > 1",
            (job_id,),
        ).fetchone()
        debits = conn.execute(
            f"SELECT count(*), coalesce(sum(amount), 0) FROM {schema}.credit_entries "
            "WHERE kind = 'debit'"
        ).fetchone()
        holds = conn.execute(
            f"SELECT state, count(*) FROM {schema}.credit_holds GROUP BY state"
        ).fetchall()
    assert states == [("done", ROWS)]
    assert {verdicts[e] for e in valid} == {"valid"}
    assert {verdicts[e] for e in invalid} == {"invalid"}
    assert retried is not None
    assert retried[0] >= 1  # rows in flight at the kill were taken again by the other worker
    assert debits == (1, -PRICE)  # the hold settled once, for the rows answered
    assert holds == [("captured", 1)]
    print(f"rows taken again after the kill: {retried[0]}")
