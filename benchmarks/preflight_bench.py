"""Launch preflight benchmark: a draft campaign of N leads (imported as the API imports them:
emailintel's offline checks, then the lead store), then one preflight (facts gathered and
checked) timed, on SQLite and/or PostgreSQL. Some leads lack a variable, some are suppressed,
some risky, so every lead-level finding fires.

Run: ``.venv/bin/python -m benchmarks.preflight_bench [--leads 100000 --backends sqlite]``.
PostgreSQL is reached through ``BAVLIO_BENCH_PG`` (a database is created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_TESTS = Path(__file__).resolve().parent.parent / "tests" / "server"
sys.path[:0] = [str(_TESTS), str(_TESTS / "campaigns")]  # the test factories

from factory import StepSpec, make_campaign, make_user  # noqa: E402

from benchmarks._databases import fresh_database  # noqa: E402
from emailintel.verify import Validator  # noqa: E402
from server.campaigns import preflight as pf  # noqa: E402
from server.campaigns.lead_source import collect  # noqa: E402
from server.campaigns.lead_store import LeadStore  # noqa: E402
from server.campaigns.preflight_facts import gather  # noqa: E402
from server.campaigns.store import CampaignStore  # noqa: E402
from server.db.engine import Database  # noqa: E402
from server.suppression.store import SuppressionStore  # noqa: E402

STEP = StepSpec(0, ({"label": "A", "weight": 1, "subject": "Hi {{name}}", "text": "{{co|you}}"},))


class _Mail:
    """No aliases, no domains: the sending findings fire, the lead work is what is timed."""

    async def alias(self, user_id: str, alias_id: str) -> None:
        return None

    async def domain(self, user_id: str, domain_id: str) -> None:
        return None

    async def domains(self, user_id: str, limit: int) -> list[Any]:
        return []


async def run(url: str, leads: int) -> tuple[float, float, int]:
    """(import seconds, preflight seconds, response leads listed) for one backend."""
    db = Database(url)
    await db.migrate()
    try:
        user = await make_user(db)
        ids = await make_campaign(db, user_id=user, steps=(STEP,))
        rows = [
            (
                f"info{i}@mailinator.com" if i % 50 == 0 else f"p{i}@d{i % 997}.example.com",
                {} if i % 7 == 0 else {"name": f"N{i}"},
                i,
            )
            for i in range(leads)
        ]
        started = time.perf_counter()
        collected = await asyncio.to_thread(collect, Validator(check_dns=False), rows)
        await LeadStore(db.engine).add(user, ids.campaign_id, collected.leads)
        imported = time.perf_counter() - started
        await SuppressionStore(db.engine).add(
            user, "domain", "d3.example.com", reason=None, source="manual"
        )
        svc: Any = SimpleNamespace(db=db, validator=Validator(check_dns=False), mail=_Mail())
        campaign = await CampaignStore(db.engine).get(user, ids.campaign_id)
        assert campaign is not None
        started = time.perf_counter()
        facts = await gather(svc, user, campaign)
        findings = await asyncio.to_thread(pf.check, facts)
        took = time.perf_counter() - started
        return imported, took, sum(len(f.leads) for f in findings)
    finally:
        await db.dispose()


def main() -> None:
    """Parse arguments, run each backend, print one line each."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        with (
            tempfile.TemporaryDirectory() as work,
            fresh_database(backend, Path(work), "preflight") as (url, _),
        ):
            imported, took, listed = asyncio.run(run(url, args.leads))
        print(
            f"{backend:<10} {args.leads} leads: import {imported:6.2f} s, "
            f"preflight {took:6.2f} s, {listed} leads listed"
        )


if __name__ == "__main__":
    main()
