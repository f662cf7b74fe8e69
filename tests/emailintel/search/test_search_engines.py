"""Search backends against the loopback lab: formats, back-off, typed errors, cache, config."""

from __future__ import annotations

import asyncio
import socket

import pytest
from lab.searchlab import DDG_ANOMALY_PAGE, Failure, LabDoc, SearchLab, ddg_page

from emailintel.errors import ConfigError, SearchQueryError, SearchRateLimited, SearchUnavailable
from emailintel.search._html import ddg_results, is_ddg_challenge, strip_tags
from emailintel.search.engines import (
    MAX_QUERY_CHARS,
    Backoff,
    BraveSearch,
    DuckDuckGoSearch,
    HttpSearchEngine,
    SearchEngine,
    SearxngSearch,
    engine_from_env,
)

QUERY = '"Acme Robotics" Smith site:linkedin.com/in'
BACKENDS = ["duckduckgo", "searxng", "brave"]


class Sleeps:
    """Records the back-off delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _engine(
    lab: SearchLab, backend: str, sleeps: Sleeps | None = None, **kw: object
) -> HttpSearchEngine:
    kw.setdefault("backoff", Backoff(retries=3, base=0.01, factor=2.0, cap=0.05))
    return engine_from_env(lab.env(backend), sleep=sleeps or Sleeps(), **kw)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_backend_parses_its_format(lab: SearchLab, backend: str) -> None:
    oracle = lab.index.search(QUERY)
    assert len(oracle) >= 3, "the query should match several corpus pages"
    async with _engine(lab, backend) as engine:
        assert isinstance(engine, SearchEngine)
        hits = await engine.search(QUERY)
    assert [(h.url, h.title, h.snippet) for h in hits] == [
        (d.url, d.title, d.snippet) for d in oracle
    ]
    assert [h.rank for h in hits] == list(range(len(hits)))
    assert {h.backend for h in hits} == {backend, engine.name}


async def test_backends_agree_on_results(lab: SearchLab) -> None:
    seen = []
    for backend in BACKENDS:
        async with _engine(lab, backend) as engine:
            seen.append([(h.url, h.title, h.snippet) for h in await engine.search(QUERY)])
    assert seen[0] == seen[1] == seen[2]


def test_ddg_parser_skips_ads_and_decodes_redirects() -> None:
    docs = [
        LabDoc(
            "https://uk.linkedin.com/in/j%C3%B6rg?trk=a&b=c", "Jörg <Müller> - Acme", "snip & more"
        ),
        LabDoc("https://example.com/page", "Other", ""),
    ]
    rows = ddg_results(ddg_page("jörg acme", docs))
    assert rows == [
        ("https://uk.linkedin.com/in/j%C3%B6rg?trk=a&b=c", "Jörg <Müller> - Acme", "snip & more"),
        ("https://example.com/page", "Other", ""),
    ]
    direct = (
        '<div class="result"><a class="result__a" href="https://www.linkedin.com/in/x">X</a></div>'
        '<div class="result"><a class="result__a" href="/relative">R</a></div>'
        '<div class="result"><a class="result__a" href="//duckduckgo.com/l/?rut=1">no target</a></div>'
        '<div class="result"><span>no anchor</span></div>'
    )
    assert ddg_results(direct) == [("https://www.linkedin.com/in/x", "X", "")]
    assert ddg_results(ddg_page("nothing", [])) == []


def test_challenge_markup_and_tag_stripping() -> None:
    assert is_ddg_challenge(DDG_ANOMALY_PAGE)
    assert not is_ddg_challenge(ddg_page("q", []))
    assert strip_tags("Jane <strong>Doe</strong> &amp; co") == "Jane Doe & co"
    assert strip_tags("  plain   text ") == "plain text"


@pytest.mark.parametrize(
    ("backend", "kind"),
    [
        ("duckduckgo", "202"),
        ("duckduckgo", "captcha"),
        ("duckduckgo", "429"),
        ("searxng", "429"),
        ("searxng", "captcha"),
        ("brave", "429"),
        ("brave", "999"),
        ("brave", "captcha"),
    ],
)
async def test_backs_off_then_succeeds(lab: SearchLab, backend: str, kind: Failure) -> None:
    sleeps = Sleeps()
    lab.fail_next(2, kind)
    async with _engine(lab, backend, sleeps) as engine:
        hits = await engine.search(QUERY)
        assert engine.requests == 3
    assert hits
    assert sleeps.delays == [0.01, 0.02]


@pytest.mark.parametrize("kind", ["202", "429", "999", "captcha"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_rate_limit_exhausts_into_typed_error(
    lab: SearchLab, backend: str, kind: Failure
) -> None:
    sleeps = Sleeps()
    lab.fail_next(4, kind)
    async with _engine(lab, backend, sleeps) as engine:
        with pytest.raises(SearchRateLimited) as info:
            await engine.search(QUERY)
        assert engine.requests == 4
    assert sleeps.delays == [0.01, 0.02, 0.04]
    assert info.value.status in (200, 202, 429, 999)
    assert isinstance(info.value, SearchUnavailable)


async def test_back_off_is_capped_and_honours_retry_after() -> None:
    policy = Backoff(retries=5, base=1.0, factor=3.0, cap=10.0)
    assert [policy.delay(i) for i in range(4)] == [1.0, 3.0, 9.0, 10.0]
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.delay(0, retry_after=60.0) == 10.0
    for bad in (
        {"retries": -1},
        {"base": -1.0},
        {"factor": 0.5},
        {"cap": -2.0},
    ):
        with pytest.raises(ConfigError):
            Backoff(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_server_errors_become_unavailable(lab: SearchLab, backend: str) -> None:
    lab.fail_next(4, "500")
    async with _engine(lab, backend) as engine:
        with pytest.raises(SearchUnavailable) as info:
            await engine.search(QUERY)
    assert not isinstance(info.value, SearchRateLimited)


@pytest.mark.parametrize("backend", ["searxng", "brave"])
async def test_malformed_json_is_unavailable_without_retry(lab: SearchLab, backend: str) -> None:
    lab.fail_next(1, "garbage")
    async with _engine(lab, backend) as engine:
        with pytest.raises(SearchUnavailable, match="malformed"):
            await engine.search(QUERY)
        assert engine.requests == 1


async def test_brave_rejects_a_wrong_key(lab: SearchLab) -> None:
    engine = BraveSearch("wrong-key", url=lab.brave_url)
    async with engine:
        with pytest.raises(SearchUnavailable, match=r"401 \(check EMAILINTEL_BRAVE_KEY\)"):
            await engine.search(QUERY)
        assert engine.requests == 1


async def test_searxng_without_json_format_enabled(lab: SearchLab) -> None:
    lab.searxng_json = False
    try:
        async with SearxngSearch(lab.base_url) as engine:
            with pytest.raises(SearchUnavailable, match=r"403 \(enable 'json'"):
                await engine.search(QUERY)
    finally:
        lab.searxng_json = True


async def test_wrong_searxng_path_is_unavailable(lab: SearchLab) -> None:
    async with SearxngSearch(lab.base_url + "/not-searxng") as engine:
        with pytest.raises(SearchUnavailable, match="HTTP 404: "):
            await engine.search(QUERY)


async def test_unreachable_backend_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    engine = DuckDuckGoSearch(
        f"http://127.0.0.1:{port}/html/", backoff=Backoff(retries=2, base=0.0), sleep=sleeps
    )
    async with engine:
        with pytest.raises(SearchUnavailable, match="ConnectError"):
            await engine.search(QUERY)
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_repeated_queries_hit_the_cache(lab: SearchLab, backend: str) -> None:
    before = len(lab.queries)
    async with _engine(lab, backend) as engine:
        first = await engine.search(QUERY)
        second = await engine.search("  " + QUERY.replace(" ", "  ") + " ")
        assert engine.requests == 1
    assert first == second
    assert len(lab.queries) - before == 1


async def test_cache_entries_expire_and_cache_can_be_off(lab: SearchLab) -> None:
    now = [1000.0]
    async with _engine(lab, "searxng", cache_ttl=60.0, clock=lambda: now[0]) as engine:
        await engine.search(QUERY)
        now[0] += 59.0
        await engine.search(QUERY)
        assert engine.requests == 1
        now[0] += 2.0
        await engine.search(QUERY)
        assert engine.requests == 2
    async with _engine(lab, "searxng", cache_ttl=0) as uncached:
        await uncached.search(QUERY)
        await uncached.search(QUERY)
        assert uncached.requests == 2


async def test_query_limits(lab: SearchLab) -> None:
    async with _engine(lab, "duckduckgo") as engine:
        with pytest.raises(SearchQueryError):
            await engine.search("   ")
        with pytest.raises(SearchQueryError):
            await engine.search("x" * (MAX_QUERY_CHARS + 1))
        assert engine.requests == 0


def test_engine_from_env_picks_and_configures_backends(lab: SearchLab) -> None:
    env = lab.env("duckduckgo")
    assert isinstance(engine_from_env({}), DuckDuckGoSearch)
    ddg = engine_from_env(env)
    assert isinstance(ddg, DuckDuckGoSearch)
    assert ddg.url == lab.ddg_url
    sx = engine_from_env(env, backend="searxng")
    assert isinstance(sx, SearxngSearch)
    assert sx.base_url == lab.base_url
    br = engine_from_env(env | {"EMAILINTEL_SEARCH_BACKEND": " Brave "})
    assert isinstance(br, BraveSearch)
    assert br.url == lab.brave_url


@pytest.mark.parametrize(
    ("env", "backend", "message"),
    [
        ({"EMAILINTEL_SEARCH_BACKEND": "searxng"}, None, "EMAILINTEL_SEARXNG_URL"),
        ({}, "brave", "EMAILINTEL_BRAVE_KEY"),
        ({"EMAILINTEL_BRAVE_KEY": "  "}, "brave", "EMAILINTEL_BRAVE_KEY"),
        ({"EMAILINTEL_SEARCH_BACKEND": "google"}, None, "unknown search backend"),
        ({"EMAILINTEL_SEARXNG_URL": "searx.local"}, "searxng", "http"),
    ],
)
def test_engine_config_errors(env: dict[str, str], backend: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        engine_from_env(env, backend=backend)


def test_engine_constructor_errors() -> None:
    with pytest.raises(ConfigError):
        BraveSearch("")
    with pytest.raises(ConfigError):
        DuckDuckGoSearch(cache_ttl=-1)
    with pytest.raises(ConfigError):
        DuckDuckGoSearch(timeout=0)


@pytest.mark.parametrize("cache_ttl", [0.0, 60.0])
async def test_concurrent_identical_queries_share_one_request(
    lab: SearchLab, cache_ttl: float
) -> None:
    async with _engine(lab, "brave", cache_ttl=cache_ttl) as engine:
        first, second, third = await asyncio.gather(
            engine.search(QUERY), engine.search(QUERY), engine.search(QUERY + " ")
        )
        assert engine.requests == 1
        assert first == second == third
        await engine.search(QUERY)
        assert engine.requests == (2 if cache_ttl == 0 else 1)


async def test_concurrent_waiters_share_the_failure(lab: SearchLab) -> None:
    lab.fail_next(4, "429")
    async with _engine(lab, "searxng") as engine:
        results = await asyncio.gather(
            engine.search(QUERY), engine.search(QUERY), return_exceptions=True
        )
        assert engine.requests == 4
    assert all(isinstance(r, SearchRateLimited) for r in results)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000,  # too deep: crashed the C parser at web3's recursion limit
        b'{"results": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b"{" + b" " * (4 * 1024 * 1024) + b"}",  # too large
        b"\xff\xfe\x00not json",
    ],
)
def test_hostile_json_answers_are_search_unavailable(body: bytes) -> None:
    import httpx

    from emailintel.errors import SearchUnavailable
    from emailintel.search.engines import _json

    with pytest.raises(SearchUnavailable):
        _json("searxng", httpx.Response(200, content=body))
