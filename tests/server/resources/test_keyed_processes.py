"""The keyed API across two real ``bavlio serve`` processes on one PostgreSQL database: the credit
ledger never overdraws, and keys made through one process work on the other."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import psycopg
import pytest
from processes import run_cli_json, serving_process

from server.cli import main

JWT = "p" * 40
KEY_SECRET = "k" * 40


def _env(url: str, schema: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BAVLIO_", "EMAILINTEL_"))},
        "BAVLIO_DATABASE_URL": url,
        "BAVLIO_DATABASE_SCHEMA": schema,
        "BAVLIO_JWT_SECRET": JWT,
        "BAVLIO_KEY_SECRET": KEY_SECRET,
        "BAVLIO_PLANS": '{"paid": {"rate_limit": "100000/minute"}}',
        "EMAILINTEL_NAMESERVERS": "127.0.0.1:9",  # never asked: the addresses are malformed
    }


async def test_hundred_parallel_calls_on_ten_credits_across_two_processes(
    pg_schema: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, schema = pg_schema
    env = _env(url, schema)
    for name, value in env.items():
        if name.startswith("BAVLIO_"):
            monkeypatch.setenv(name, value)
    config = tmp_path / "bavlio.toml"
    config.write_text("")
    code = await asyncio.to_thread(main, ["migrate", "--config", str(config)])
    assert code == 0
    with (
        serving_process(tmp_path, config, env, tmp_path / "one.log") as (one, _),
        serving_process(tmp_path, config, env, tmp_path / "two.log") as (two, _),
    ):
        made = await run_cli_json(["users", "create", "race@x.test", "--plan", "paid", "--key"])
        granted = await run_cli_json(
            ["credits", "grant", made["user_id"], "10", "--reference", "r"]
        )
        assert granted["available"] == 10
        headers = {"Authorization": f"Bearer {made['api_key']}"}
        async with httpx.AsyncClient(timeout=60) as client:

            async def call(i: int) -> httpx.Response:
                base = one if i % 2 else two
                return await client.post(
                    base + "/api/v1/email-verification/validate",
                    json={"email": f"not-an-address-{i}"},
                    headers=headers,
                )

            responses = await asyncio.gather(*(call(i) for i in range(100)))
            codes = sorted(r.status_code for r in responses)
            assert codes.count(200) == 10, codes
            assert codes.count(402) == 90, codes
            for refused in (r for r in responses if r.status_code == 402):
                assert refused.json()["error"]["code"] == "insufficient_credits"
            served_by = {r.request.url.port for r in responses if r.status_code == 200}
            balance = (await client.get(one + "/api/v1/credits/balance", headers=headers)).json()
            assert (balance["total_credits"], balance["held_credits"], balance["used_credits"]) == (
                0,
                0,
                10,
            )
            # a key minted through one process is known to the other (shared secrets)
            session = {"Authorization": f"Bearer {made['session_token']}"}
            minted = await client.post(one + "/api/v1/api-keys", json={}, headers=session)
            other = {"Authorization": f"Bearer {minted.json()['key']}"}
            assert (await client.get(two + "/api/v1/auth/me", headers=other)).status_code == 200
    assert served_by  # at least one process answered paid calls
    sync_url = url.replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(sync_url) as conn:
        rows = conn.execute(
            f"SELECT count(*), coalesce(sum(amount), 0) FROM {schema}.credit_entries "
            "WHERE kind = 'debit'"
        ).fetchone()
        holds = conn.execute(
            f"SELECT state, count(*) FROM {schema}.credit_holds GROUP BY state"
        ).fetchall()
    assert rows == (10, -10)
    assert holds == []  # a synchronous call is debited once after its work, without a hold
