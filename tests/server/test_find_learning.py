"""The find use case runs emailintel's finder on the server's confirmed addresses: a find at a
domain is stored (source "find") and ranks that pattern first for the next find there, from
another app instance on the same database (SQLite and PostgreSQL). Postfix lab behind NSD."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import serving
from lab.dnslab import DnsLab
from lab.maillab import Listener, MailDomain, MailLab
from lab.mailstack import mail_stack
from sqlalchemy import select

from emailintel.dns import DnsResolver
from emailintel.patternstore import PatternStoreError
from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts
from server.app import create_app
from server.db.engine import Database
from server.db.models import KnownAddress
from server.finder.known import KnownAddresses
from server.finder.store import KnownPatternStore
from server.services import Services
from server.settings import Settings, load_settings
from server.usecases.find import FindRequest, find

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def learn_lab() -> Iterator[DnsLab]:
    lab = MailLab(
        listeners=[Listener("main", "mx.learn.test", 2), Listener("wild", "mx.wild.test", 3)],
        domains=[
            MailDomain("learn.test", users=("doe.john", "roe.jane", "petrova-olga")),
            MailDomain("wild.test", mx=("wild",), catch_all=True),
        ],
        in_flow_delay="0",
    )
    with mail_stack(lab) as (_, dns):
        yield dns


def _prober() -> Prober:
    return Prober(
        helo="probe.verifier-lab.test",
        mail_from="bounce@verifier-lab.test",
        allow_private_mx=True,
        politeness=PolitenessConfig.unlimited(),
        timeouts=Timeouts(connect=2, banner=5, command=5),
    )


@pytest_asyncio.fixture(loop_scope="function")
async def two_apps(
    backend_settings: Settings, learn_lab: DnsLab
) -> AsyncIterator[tuple[Services, Services]]:
    """Two app instances (each with its own prober and pools) on one migrated database."""
    apps = [
        create_app(backend_settings, resolver=DnsResolver([learn_lab.nameserver]), prober=_prober())
        for _ in range(2)
    ]
    async with serving(apps[0]), serving(apps[1]):
        yield apps[0].state.services, apps[1].state.services


def _named(first: str, last: str, domain: str) -> FindRequest:
    return FindRequest(first_name=first, last_name=last, domain=domain)


async def test_a_find_teaches_the_other_instance(two_apps: tuple[Services, Services]) -> None:
    one, two = two_apps
    first = await find(one, _named("John", "Doe", "learn.test"))
    assert first.found
    assert first.email == "doe.john@learn.test"
    assert first.pattern == "{last}.{first}"
    assert first.attempts[0].email != "doe.john@learn.test"  # the priors ranked it lower
    async with two.db.engine.connect() as conn:
        rows = (await conn.execute(select(KnownAddress))).all()
    assert [(r.email, r.domain, r.owner_name, r.source) for r in rows] == [
        ("doe.john@learn.test", "learn.test", "John Doe", "find")
    ]
    second = await find(two, _named("Jane", "Roe", "learn.test"))
    assert second.found
    assert [(a.email, a.status) for a in second.attempts] == [("roe.jane@learn.test", "accepted")]
    distribution = await two.known.distribution("learn.test")
    assert distribution.patterns[0].pattern == "{last}.{first}"


async def test_given_candidates_and_catch_all_are_not_learned(
    two_apps: tuple[Services, Services],
) -> None:
    one, _ = two_apps
    given = await find(one, FindRequest(candidates=["ann@wild.test", "roe.jane@learn.test"]))
    assert given.found
    assert given.email == "roe.jane@learn.test"
    assert [a.status for a in given.attempts] == ["catch_all", "accepted"]
    assert given.catch_all is True
    wild = await find(one, _named("Ann", "Lee", "wild.test"))
    assert not wild.found
    assert wild.catch_all is True
    assert wild.attempts[0].status == "catch_all"
    assert {a.status for a in wild.attempts[1:]} == {"unknown"}  # never probed
    assert (await one.known.stats()).addresses == 0  # no owner name: nothing to learn


async def test_a_rare_pattern_is_found_past_the_first_ten(
    two_apps: tuple[Services, Services],
) -> None:
    one, _ = two_apps
    found = await find(one, _named("Olga", "Petrova", "learn.test"))
    assert found.found
    assert found.email == "petrova-olga@learn.test"
    assert len(found.attempts) > 10
    assert {a.status for a in found.attempts[:-1]} == {"rejected"}


async def test_an_unmigrated_database_costs_the_learning_not_the_find(
    tmp_path: Path, learn_lab: DnsLab
) -> None:
    settings = load_settings(env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    svc = Services.build(settings, resolver=DnsResolver([learn_lab.nameserver]), prober=_prober())
    try:
        store = KnownPatternStore(svc.known)
        with pytest.raises(PatternStoreError):
            await store.known("learn.test")
        with pytest.raises(PatternStoreError):
            await store.add("learn.test", "doe.john@learn.test", "John Doe")
        found = await find(svc, _named("John", "Doe", "learn.test"))
        assert found.found
        assert found.email == "doe.john@learn.test"
    finally:
        await svc.close()


async def test_the_adapter_reads_what_known_addresses_holds(backend_settings: Settings) -> None:
    db = Database(backend_settings.database_url, schema=backend_settings.database_schema)
    await db.migrate()
    try:
        known = KnownAddresses(db.engine)
        store = KnownPatternStore(known)
        await store.add("a.test", "x.y@a.test", "Xavier Young")
        await known.confirm("z@a.test", "a.test", "Zed", source="verify")
        assert sorted(await store.known("a.test")) == [
            ("x.y@a.test", "Xavier Young"),
            ("z@a.test", "Zed"),
        ]
        assert await store.known("b.test") == []
    finally:
        await db.dispose()
