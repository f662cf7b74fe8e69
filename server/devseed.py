"""The demo data of ``bavlio dev``: a keyed-API user with a key and credits (made by the code
behind ``bavlio users create --key`` and ``bavlio credits grant``) and a small prospect pool
(imported through the prospect importer and store), so the printed examples return real answers.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from server.settings import Settings

__all__ = [
    "DEMO_CREDITS",
    "DEMO_EMAIL",
    "DEMO_PROSPECTS",
    "DEMO_TAG",
    "KEYED_EXAMPLE_BODY",
    "KEYED_EXAMPLE_PATH",
    "DemoAccount",
    "seed_demo",
]

DEMO_EMAIL = "demo@example.com"
DEMO_CREDITS = 1000
DEMO_TAG = "demo"
KEYED_EXAMPLE_PATH = "/api/v1/email-verification/validate"
KEYED_EXAMPLE_BODY: dict[str, Any] = {"email": "jane@example.com"}

DEMO_PROSPECTS: tuple[dict[str, Any], ...] = (
    {
        "name": "Ada Demo",
        "title": "Head of Data",
        "company": "Example Analytics",
        "domain": "example.com",
        "location": "London",
        "tags": ["demo", "ai", "data"],
    },
    {
        "name": "Bruno Sample",
        "title": "CTO",
        "company": "Example Robotics",
        "domain": "example.org",
        "location": "Berlin",
        "tags": ["demo", "ai", "robotics"],
    },
    {
        "name": "Chloe Placeholder",
        "title": "VP Sales",
        "company": "Example Analytics",
        "domain": "example.com",
        "location": "Paris",
        "tags": ["demo", "sales"],
    },
    {
        "name": "Dev Fixture",
        "title": "Founder",
        "company": "Example Labs",
        "domain": "example.net",
        "location": "Lisbon",
        "tags": ["demo", "ai", "founder"],
    },
    {
        "name": "Eve Example",
        "title": "Marketing Lead",
        "company": "Example Robotics",
        "domain": "example.org",
        "location": "Madrid",
        "tags": ["demo", "marketing"],
    },
)
"""Fictional people at reserved example domains, every one tagged ``demo``."""


@dataclass(frozen=True)
class DemoAccount:
    """The demo user of the keyed API and what was seeded."""

    user_id: str
    email: str
    api_key: str
    credits: int
    prospects: int

    def keyed_command(self, base_url: str) -> str:
        """A curl command calling the keyed validate route with the demo key (1 credit)."""
        return shlex.join(
            [
                "curl",
                "-sS",
                "-X",
                "POST",
                base_url + KEYED_EXAMPLE_PATH,
                "-H",
                f"Authorization: Bearer {self.api_key}",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(KEYED_EXAMPLE_BODY),
            ]
        )


async def _import_prospects(settings: Settings) -> int:
    from server.db.engine import Database
    from server.prospects.importer import parse_rows
    from server.prospects.store import ProspectStore

    parsed = parse_rows(enumerate(DEMO_PROSPECTS, 1))
    if parsed.errors:  # the table above is ours: a rejected row is a bug here
        raise ValueError(f"demo prospect rows rejected: {parsed.errors}")
    db = Database.from_settings(settings)
    try:
        await db.migrate()
        return await ProspectStore(db).add([prospect for _, prospect in parsed.rows])
    finally:
        await db.dispose()


async def seed_demo(settings: Settings) -> DemoAccount:
    """Create the demo user (paid plan, a key with every scope), grant it credits once, and
    import the demo prospects; on a fresh database (``bavlio dev`` starts from one)."""
    from server.accounts_cli import credits_grant, users_create

    made = await users_create(settings, DEMO_EMAIL, plan="paid", key=True, scopes=["*"])
    granted = await credits_grant(settings, DEMO_EMAIL, DEMO_CREDITS, reference="bavlio-dev-demo")
    prospects = await _import_prospects(settings)
    return DemoAccount(
        user_id=str(made["user_id"]),
        email=DEMO_EMAIL,
        api_key=str(made["api_key"]),
        credits=int(granted["available"]),
        prospects=prospects,
    )
