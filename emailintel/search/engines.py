"""Web-search backends for the LinkedIn finder (the I/O edge): DuckDuckGo HTML, SearXNG, Brave.

Each backend turns a query into :class:`SearchHit` objects. Shared behaviour lives in
:class:`HttpSearchEngine`: a bounded TTL cache of answers, and a bounded exponential back-off on
rate-limit answers (202, 429, 999, CAPTCHA/anomaly pages) and server errors, ending in
:class:`SearchRateLimited` or :class:`SearchUnavailable`. No CAPTCHA is ever solved.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

import httpx
import pydantic_core
from cachetools import TTLCache

from emailintel.errors import ConfigError, SearchQueryError, SearchRateLimited, SearchUnavailable
from emailintel.search._html import ddg_results, is_ddg_challenge, strip_tags
from emailintel.search.models import SearchHit

__all__ = [
    "BACKENDS",
    "DEFAULT_BRAVE_URL",
    "DEFAULT_DUCKDUCKGO_URL",
    "Backoff",
    "BraveSearch",
    "DuckDuckGoSearch",
    "HttpSearchEngine",
    "SearchEngine",
    "SearxngSearch",
    "engine_from_env",
]

DEFAULT_DUCKDUCKGO_URL = "https://html.duckduckgo.com/html/"
DEFAULT_BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
RATE_LIMIT_STATUSES = frozenset({202, 429, 999})
_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
MAX_QUERY_CHARS = 1024


@runtime_checkable
class SearchEngine(Protocol):
    """Anything that answers a web query with ranked hits."""

    name: str

    async def search(self, query: str) -> list[SearchHit]:
        """Organic results for the query, best first."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Bounded exponential back-off: ``retries`` extra attempts, delay base * factor**n <= cap."""

    retries: int = 3
    base: float = 2.0
    factor: float = 2.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base < 0 or self.factor < 1 or self.cap < 0:
            raise ConfigError("back-off needs retries >= 0, base >= 0, factor >= 1, cap >= 0")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based); a server's Retry-After wins, capped."""
        wanted = self.base * self.factor**attempt
        if retry_after is not None:
            wanted = max(wanted, retry_after)
        return min(wanted, self.cap)


class _Retry(Exception):
    """Internal: this answer deserves another attempt."""

    def __init__(self, message: str, *, limited: bool, status: int | None, after: float | None):
        super().__init__(message)
        self.limited = limited
        self.status = status
        self.after = after


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds when given as a number."""
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class HttpSearchEngine:
    """Cache + back-off around one HTTP request per query; subclasses build and parse it."""

    name = "http"

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
        cache_ttl: float = 3600.0,
        cache_size: int = 1024,
        timeout: float = 15.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_ttl < 0 or cache_size < 0 or timeout <= 0:
            raise ConfigError("cache_ttl and cache_size must be >= 0 and timeout > 0")
        self._client = client
        self._owns_client = client is None
        self._backoff = backoff or Backoff()
        self._cache: TTLCache[str, list[SearchHit]] | None = (
            TTLCache(maxsize=cache_size, ttl=cache_ttl, timer=clock)
            if cache_ttl > 0 and cache_size > 0
            else None
        )
        self._timeout = timeout
        self._sleep = sleep
        self._inflight: dict[str, asyncio.Future[list[SearchHit]]] = {}
        self.requests = 0
        """HTTP requests sent so far (cache hits send none)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this engine created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, headers={"User-Agent": _USER_AGENT}, follow_redirects=True
            )
        return self._client

    async def search(self, query: str) -> list[SearchHit]:
        """Organic results for the query, from the cache when still fresh."""
        query = " ".join(query.split())
        if not query or len(query) > MAX_QUERY_CHARS:
            raise SearchQueryError(f"query must be 1-{MAX_QUERY_CHARS} characters")
        if self._cache is not None and (cached := self._cache.get(query)) is not None:
            return list(cached)
        task = self._inflight.get(query)
        if task is None:
            # callers asking the same query at once share one request
            task = asyncio.ensure_future(self._fetch(query))
            self._inflight[query] = task
            task.add_done_callback(lambda _: self._inflight.pop(query, None))
        return list(await asyncio.shield(task))

    async def _fetch(self, query: str) -> list[SearchHit]:
        hits = await self._with_backoff(query)
        if self._cache is not None:
            self._cache[query] = hits
        return hits

    async def _with_backoff(self, query: str) -> list[SearchHit]:
        last: _Retry | None = None
        for attempt in range(self._backoff.retries + 1):
            if last is not None:
                await self._sleep(self._backoff.delay(attempt - 1, last.after))
            try:
                self.requests += 1
                response = await self._send(self._http(), query)
                return self._handle(response)
            except _Retry as exc:
                last = exc
            except httpx.TransportError as exc:
                last = _Retry(
                    f"{type(exc).__name__}: {exc}", limited=False, status=None, after=None
                )
        assert last is not None
        tries = self._backoff.retries + 1
        if last.limited:
            raise SearchRateLimited(
                f"{self.name}: rate-limited after {tries} attempts ({last})",
                status=last.status,
                retry_after=last.after,
            )
        raise SearchUnavailable(f"{self.name}: failed after {tries} attempts ({last})")

    def _handle(self, response: httpx.Response) -> list[SearchHit]:
        status = response.status_code
        if status in RATE_LIMIT_STATUSES:
            raise _Retry(
                f"HTTP {status}", limited=True, status=status, after=_retry_after(response)
            )
        if status >= 500:
            raise _Retry(f"HTTP {status}", limited=False, status=status, after=None)
        if status != 200:
            raise SearchUnavailable(
                f"{self.name}: HTTP {status}{self._hint(status)}: {response.text[:200]!r}"
            )
        rows = self._parse(response)
        return [
            SearchHit(url=url, title=title, snippet=snippet, rank=i, backend=self.name)
            for i, (url, title, snippet) in enumerate(rows)
        ]

    def _hint(self, status: int) -> str:
        """A configuration hint for a refusal status ('' when there is none)."""
        return ""

    async def _send(self, client: httpx.AsyncClient, query: str) -> httpx.Response:
        raise NotImplementedError

    def _parse(self, response: httpx.Response) -> list[tuple[str, str, str]]:
        raise NotImplementedError


MAX_JSON_BYTES = 4 * 1024 * 1024
"""Largest JSON answer a backend may send (a page of results is a few KiB)."""


def _json(engine: str, response: httpx.Response) -> Any:
    """Decoded JSON body, or SearchUnavailable for a malformed, oversized or too deep one.

    Parsed by pydantic's parser, whose nesting limit holds whatever the interpreter's recursion
    limit (web3's py_ecc raises it to 100,000, where the C json parser can crash the process).
    """
    content = response.content
    if len(content) > MAX_JSON_BYTES:
        raise SearchUnavailable(f"{engine}: answer larger than {MAX_JSON_BYTES} bytes")
    try:
        return pydantic_core.from_json(content)
    except ValueError as exc:
        raise SearchUnavailable(f"{engine}: malformed JSON answer") from exc


def _rows(engine: str, items: Any, text_key: str) -> list[tuple[str, str, str]]:
    """(url, title, text) of a JSON result list; SearchUnavailable when it is not one."""
    if not isinstance(items, list):
        raise SearchUnavailable(f"{engine}: answer has no result list")
    out: list[tuple[str, str, str]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            continue
        title, text = item.get("title"), item.get(text_key)
        out.append(
            (
                item["url"],
                strip_tags(title) if isinstance(title, str) else "",
                strip_tags(text) if isinstance(text, str) else "",
            )
        )
    return out


class DuckDuckGoSearch(HttpSearchEngine):
    """DuckDuckGo's HTML endpoint: POST ``q=``; results are ``a.result__a`` uddg redirects."""

    name = "duckduckgo"

    def __init__(self, url: str = DEFAULT_DUCKDUCKGO_URL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url

    async def _send(self, client: httpx.AsyncClient, query: str) -> httpx.Response:
        return await client.post(self.url, data={"q": query, "b": "", "kl": "wt-wt"})

    def _parse(self, response: httpx.Response) -> list[tuple[str, str, str]]:
        html = response.text
        if is_ddg_challenge(html):
            raise _Retry(
                "anomaly/challenge page", limited=True, status=response.status_code, after=None
            )
        return ddg_results(html)


class SearxngSearch(HttpSearchEngine):
    """A self-hosted SearXNG: ``GET {base}/search?q=...&format=json``."""

    name = "searxng"

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"SearXNG URL must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/")

    async def _send(self, client: httpx.AsyncClient, query: str) -> httpx.Response:
        return await client.get(f"{self.base_url}/search", params={"q": query, "format": "json"})

    def _hint(self, status: int) -> str:
        return " (enable 'json' under search.formats in settings.yml)" if status == 403 else ""

    def _parse(self, response: httpx.Response) -> list[tuple[str, str, str]]:
        body = _json(self.name, response)
        if not isinstance(body, dict):
            raise SearchUnavailable(f"{self.name}: answer is not an object")
        rows = _rows(self.name, body.get("results"), "content")
        if not rows and _engines_blocked(body.get("unresponsive_engines")):
            raise _Retry("upstream engines blocked (CAPTCHA)", limited=True, status=200, after=None)
        return rows


def _engines_blocked(unresponsive: Any) -> bool:
    """True when SearXNG reports its upstream engines as CAPTCHA'd or rate-limited."""
    if not isinstance(unresponsive, list) or not unresponsive:
        return False
    reasons = " ".join(str(x).lower() for item in unresponsive for x in item)
    return any(w in reasons for w in ("captcha", "too many requests", "access denied"))


class BraveSearch(HttpSearchEngine):
    """Brave Search API: ``GET ...?q=`` with ``X-Subscription-Token``; results in web.results."""

    name = "brave"

    def __init__(self, api_key: str, url: str = DEFAULT_BRAVE_URL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not api_key.strip():
            raise ConfigError("Brave Search needs an API key")
        self.url = url
        self._key = api_key.strip()

    async def _send(self, client: httpx.AsyncClient, query: str) -> httpx.Response:
        headers = {"X-Subscription-Token": self._key, "Accept": "application/json"}
        return await client.get(self.url, params={"q": query, "count": 20}, headers=headers)

    def _hint(self, status: int) -> str:
        return " (check EMAILINTEL_BRAVE_KEY)" if status in (401, 403) else ""

    def _parse(self, response: httpx.Response) -> list[tuple[str, str, str]]:
        body = _json(self.name, response)
        if not isinstance(body, dict):
            raise SearchUnavailable(f"{self.name}: answer is not an object")
        web = body.get("web")
        if web is None:
            return []
        if not isinstance(web, dict):
            raise SearchUnavailable(f"{self.name}: 'web' is not an object")
        return _rows(self.name, web.get("results", []), "description")


BACKENDS = ("duckduckgo", "searxng", "brave")


def engine_from_env(
    env: Mapping[str, str] | None = None, *, backend: str | None = None, **kwargs: Any
) -> HttpSearchEngine:
    """The backend named by ``backend`` or EMAILINTEL_SEARCH_BACKEND (default duckduckgo).

    SearXNG needs EMAILINTEL_SEARXNG_URL, Brave EMAILINTEL_BRAVE_KEY (ConfigError otherwise);
    EMAILINTEL_DUCKDUCKGO_URL and EMAILINTEL_BRAVE_URL override the public endpoints.
    """
    env = os.environ if env is None else env
    chosen = (backend or env.get("EMAILINTEL_SEARCH_BACKEND") or "duckduckgo").strip().lower()
    if chosen == "duckduckgo":
        return DuckDuckGoSearch(
            env.get("EMAILINTEL_DUCKDUCKGO_URL") or DEFAULT_DUCKDUCKGO_URL, **kwargs
        )
    if chosen == "searxng":
        url = env.get("EMAILINTEL_SEARXNG_URL", "").strip()
        if not url:
            raise ConfigError("EMAILINTEL_SEARXNG_URL is required for the searxng backend")
        return SearxngSearch(url, **kwargs)
    if chosen == "brave":
        key = env.get("EMAILINTEL_BRAVE_KEY", "").strip()
        if not key:
            raise ConfigError("EMAILINTEL_BRAVE_KEY is required for the brave backend")
        return BraveSearch(key, env.get("EMAILINTEL_BRAVE_URL") or DEFAULT_BRAVE_URL, **kwargs)
    raise ConfigError(f"unknown search backend {chosen!r}; choose one of {', '.join(BACKENDS)}")
