"""Prospect search on SQLite and PostgreSQL: ranking, filters, pagination, ties, same results."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from server.db import Database
from server.db.migrate import current_revision, head_revision
from server.prospects.models import ProspectIn, SearchRequest, SearchResponse
from server.prospects.ranking import idf, weighted_jaccard
from server.prospects.store import ProspectStore
from server.settings import Settings

VOCAB = [f"tag{i}" for i in range(12)]
COMPANIES = ["Acme", "Globex", "Initech", "ACME"]


def _pool(seed: int, n: int) -> list[ProspectIn]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        # a skewed tag distribution, so weights differ; duplicated tag sets create ties
        tags = rng.sample(VOCAB[: rng.choice([3, 6, 12])], rng.randint(1, 3))
        out.append(
            ProspectIn(
                name=f"Person {i}",
                title=rng.choice(["VP Sales", "Head of Growth", "CTO", "Sales Engineer"]),
                company=rng.choice(COMPANIES),
                domain=rng.choice(["acme.io", "globex.com"]),
                location=rng.choice(["Berlin, DE", "Paris, FR", "berlin"]),
                tags=tuple(tags),
            )
        )
    return out


async def _store(settings: Settings) -> tuple[Database, ProspectStore]:
    db = Database(settings.database_url, schema=settings.database_schema)
    await db.migrate()
    return db, ProspectStore(db)


@pytest_asyncio.fixture(loop_scope="function")
async def store(backend_settings: Settings) -> AsyncIterator[ProspectStore]:
    db, store = await _store(backend_settings)
    yield store
    await db.dispose()


def _expected(pool: list[ProspectIn], request: SearchRequest) -> list[tuple[int, float]]:
    """The reference ranking: ids are 1..n in insertion order."""
    n = len(pool)
    df: dict[str, int] = {}
    for p in pool:
        for t in p.tags:
            df[t] = df.get(t, 0) + 1
    weights = {t: idf(c, n) for t, c in df.items()}
    f = request.filters
    scored = []
    for pid, p in enumerate(pool, start=1):
        if not set(p.tags) & set(request.tags):
            continue
        if f and f.company and (p.company or "").lower() != f.company.lower():
            continue
        if f and f.title and f.title.lower() not in (p.title or "").lower():
            continue
        if f and f.location and f.location.lower() not in (p.location or "").lower():
            continue
        if f and f.domain and p.domain != f.domain.lower():
            continue
        scored.append((pid, weighted_jaccard(request.tags, p.tags, weights, n)))
    return sorted(scored, key=lambda item: (-item[1], item[0]))


def _got(page: SearchResponse) -> list[tuple[int, float]]:
    return [(p.id, p.score) for p in page.data]


REQUESTS: list[dict[str, Any]] = [
    {"tags": ["tag0"], "limit": 100},
    {"tags": ["tag1", "tag7", "TAG11 "], "limit": 100},
    {"tags": ["tag2", "nowhere"], "limit": 100},
    {"tags": ["tag0", "tag1"], "limit": 100, "filters": {"company": "acme"}},
    {"tags": ["tag0", "tag3"], "limit": 100, "filters": {"title": "SALES", "location": "berlin"}},
    {"tags": ["tag4", "tag5"], "limit": 100, "filters": {"domain": "GLOBEX.com"}},
]


@pytest.mark.parametrize("raw", REQUESTS)
async def test_ranking_matches_the_reference(store: ProspectStore, raw: dict[str, Any]) -> None:
    pool = _pool(7, 150)
    assert await store.add(pool) == len(pool)
    request = SearchRequest.model_validate(raw)
    page = await store.search(request)
    expected = _expected(pool, request)
    assert expected  # the case exercises something
    assert _got(page) == expected[: request.limit]
    assert page.total == len(expected)
    for item in page.data:
        assert item.matched_tags == [t for t in request.tags if t in item.tags]


async def test_rare_tag_outranks_common_tag(store: ProspectStore) -> None:
    common = [ProspectIn(name=f"c{i}", tags=("common",)) for i in range(8)]
    await store.add([*common, ProspectIn(name="rare one", tags=("rare",))])
    page = await store.search(SearchRequest(tags=["common", "rare"]))
    assert page.data[0].name == "rare one"
    assert page.data[0].score > page.data[1].score


async def test_ties_break_by_ascending_id(store: ProspectStore) -> None:
    await store.add([ProspectIn(name=f"p{i}", tags=("x", "y")) for i in range(5)])
    page = await store.search(SearchRequest(tags=["y", "x"]))
    assert [p.id for p in page.data] == sorted(p.id for p in page.data)
    assert {p.score for p in page.data} == {1.0}


async def test_pagination(store: ProspectStore) -> None:
    pool = _pool(11, 60)
    await store.add(pool)
    full = await store.search(SearchRequest(tags=["tag0", "tag1", "tag2"], limit=100))
    pages: list[tuple[int, float]] = []
    offset = 0
    while True:
        page = await store.search(
            SearchRequest(tags=["tag0", "tag1", "tag2"], limit=7, offset=offset)
        )
        pages.extend(_got(page))
        assert page.total == full.total
        assert page.has_more == (offset + 7 < full.total)
        if not page.has_more:
            break
        offset += 7
    assert pages == _got(full)
    beyond = await store.search(SearchRequest(tags=["tag0"], offset=10_000))
    assert beyond.data == []
    assert beyond.total > 0
    assert not beyond.has_more


async def test_no_match_and_empty_pool(store: ProspectStore) -> None:
    page = await store.search(SearchRequest(tags=["anything"]))
    assert (page.total, page.data, page.has_more) == (0, [], False)
    await store.add([ProspectIn(name="a", tags=("x",))])
    assert (await store.search(SearchRequest(tags=["y"]))).total == 0


async def test_weights_follow_later_imports(store: ProspectStore) -> None:
    await store.add([ProspectIn(name="a", tags=("x",)), ProspectIn(name="b", tags=("y",))])
    before = await store.search(SearchRequest(tags=["x", "y"]))
    assert before.data[0].score == before.data[1].score
    await store.add([ProspectIn(name=f"y{i}", tags=("y",)) for i in range(5)])
    after = await store.search(SearchRequest(tags=["x", "y"]))
    assert after.data[0].name == "a"  # x became the rarer tag
    assert after.data[0].score > after.data[1].score


@pytest.mark.unmigrated
async def test_migrations_are_idempotent_and_at_head(backend_settings: Settings) -> None:
    db, _ = await _store(backend_settings)
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(current_revision) == head_revision()
            count = (await conn.execute(text("SELECT prospect_count FROM prospect_pool"))).scalar()
            assert count == 0
    finally:
        await db.dispose()


async def test_sqlite_and_postgresql_agree(sqlite_url: str, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    dbs = [Database(sqlite_url), Database(url, schema=schema)]
    pool = _pool(23, 200)
    results: list[list[SearchResponse]] = []
    try:
        for db in dbs:
            await db.migrate()
            store = ProspectStore(db)
            await store.add(pool)
            results.append(
                [
                    await store.search(SearchRequest.model_validate({**raw, "limit": 25}))
                    for raw in REQUESTS
                ]
            )
    finally:
        for db in dbs:
            await db.dispose()
    assert results[0] == results[1]
    assert any(page.total > 25 for page in results[0])


async def test_a_tag_that_normalises_past_the_limit_matches_nothing(store: ProspectStore) -> None:
    """NFKC makes U+FDFA 18 characters: 4 of them are a valid request (64 as sent), 72 after."""
    await store.add([ProspectIn(name="a", tags=("x",))])
    request = SearchRequest.model_validate_json('{"tags": ["\\ufdfa\\ufdfa\\ufdfa\\ufdfa", "x"]}')
    assert len(request.tags[0]) > 64
    page = await store.search(request)
    assert [p.name for p in page.data] == ["a"]
    assert page.data[0].matched_tags == ["x"]
    alone = await store.search(SearchRequest.model_validate_json('{"tags": ["\\ufdfa" ]}'))
    assert alone.total == 0
