"""A loopback search lab: one HTTP server speaking DuckDuckGo HTML, SearXNG JSON and Brave JSON.

Results come from a corpus of documents (profile pages, company pages, posts, ...). A query
matches a document when at least half of its words occur in the document's title, snippet or
URL (diacritics folded, ``site:`` restricting to the host); quoted phrases found verbatim rank
higher. The lab can be told to answer 202 / 429 / 999 / 500 / a CAPTCHA page / a garbled body
for the next N requests, and records every query it served.

Routes: ``/html/`` (DuckDuckGo, GET or POST ``q``), ``/search?format=json`` (SearXNG),
``/res/v1/web/search`` (Brave, needs ``X-Subscription-Token``).
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, quote, urlsplit

from anyascii import anyascii

from ._service import Service

LAB_HOST = "127.0.0.1"
BRAVE_KEY = "lab-brave-key"
EVAL_DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "linkedin_eval.json"
PAGE_SIZE = 10

Failure = Literal["202", "429", "999", "500", "captcha", "garbage"]
_TOKEN = re.compile(r"[a-z0-9]+")
_PHRASE = re.compile(r'"([^"]*)"')
_SITE = re.compile(r"\bsite:(\S+)")


@dataclass(frozen=True, slots=True)
class LabDoc:
    """One indexed page as a search engine would show it."""

    url: str
    title: str
    snippet: str


def _fold(text: str) -> list[str]:
    return _TOKEN.findall(anyascii(text).lower())


def load_docs(path: Path = EVAL_DATA) -> list[LabDoc]:
    """Profiles and other pages of the evaluation corpus, as served (URL variants included)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    docs = [LabDoc(p["served_url"], p["title"], p["snippet"]) for p in data["profiles"]]
    docs += [LabDoc(p["url"], p["title"], p["snippet"]) for p in data["pages"]]
    return docs


class _Index:
    """Token sets of the documents, for the lab's crude but deterministic ranking."""

    def __init__(self, docs: Sequence[LabDoc]) -> None:
        self.docs = list(docs)
        self._tokens: list[list[str]] = []
        self._hosts: list[str] = []
        for d in self.docs:
            parts = urlsplit(d.url)
            self._tokens.append(_fold(f"{d.title} {d.snippet} {parts.path.replace('-', ' ')}"))
            self._hosts.append((parts.hostname or "").lower())

    def search(self, query: str) -> list[LabDoc]:
        sites = _SITE.findall(query)
        rest = _SITE.sub(" ", query)
        phrases = [_fold(p) for p in _PHRASE.findall(rest)]
        terms = list(dict.fromkeys(_fold(rest.replace('"', " "))))
        if not terms:
            return []
        hosts = {s.split("/")[0].lower() for s in sites}
        need = max(1, (len(terms) + 1) // 2)
        scored: list[tuple[int, int, LabDoc]] = []
        for i, (doc, tokens, host) in enumerate(
            zip(self.docs, self._tokens, self._hosts, strict=True)
        ):
            if hosts and not any(host == h or host.endswith("." + h) for h in hosts):
                continue
            present = set(tokens)
            hits = sum(1 for t in terms if t in present)
            if hits < need:
                continue
            bonus = sum(1 for p in phrases if p and _has_run(tokens, p))
            scored.append((hits + 2 * bonus, i, doc))
        scored.sort(key=lambda x: (-x[0], x[1]))
        return [d for _, _, d in scored[:PAGE_SIZE]]


def _has_run(tokens: Sequence[str], run: Sequence[str]) -> bool:
    n = len(run)
    return any(list(tokens[i : i + n]) == list(run) for i in range(len(tokens) - n + 1))


def _bold(text: str, terms: Iterable[str], open_tag: str, close_tag: str) -> str:
    """HTML-escaped text with query words wrapped the way the engine highlights them."""
    wanted = set(terms)
    out = []
    for word in re.split(r"(\s+)", text):
        esc = html.escape(word)
        out.append(f"{open_tag}{esc}{close_tag}" if set(_fold(word)) & wanted else esc)
    return "".join(out)


def ddg_page(query: str, docs: Sequence[LabDoc]) -> str:
    """A DuckDuckGo HTML result page (html.duckduckgo.com markup: uddg redirect anchors)."""
    terms = _fold(_SITE.sub(" ", query))
    rows = [
        '<div class="result results_links results_links_deep result--ad ">'
        '<div class="links_main links_deep result__body"><h2 class="result__title">'
        '<a rel="nofollow" class="result__a" href="https://duckduckgo.com/y.js?ad_domain=example.com'
        "&amp;ad_provider=bingv7aa&amp;u3=x\">Sponsored: Find Anyone's Email</a></h2>"
        '<a class="result__snippet" href="https://duckduckgo.com/y.js?u3=x">Ad text</a></div></div>'
    ]
    for i, doc in enumerate(docs):
        target = quote(doc.url, safe="")
        href = f"//duckduckgo.com/l/?uddg={target}&amp;rut={i:064x}"
        shown = html.escape(urlsplit(doc.url).netloc + urlsplit(doc.url).path)
        rows.append(
            '<div class="result results_links results_links_deep web-result ">\n'
            '  <div class="links_main links_deep result__body">\n'
            f'    <h2 class="result__title"><a rel="nofollow" class="result__a" href="{href}">'
            f"{_bold(doc.title, terms, '<b>', '</b>')}</a></h2>\n"
            '    <div class="result__extras"><div class="result__extras__url">'
            '<span class="result__icon"><a rel="nofollow" href="' + href + '">'
            '<img class="result__icon__img" width="16" height="16" alt="" '
            'src="//external-content.duckduckgo.com/ip3/www.linkedin.com.ico" name="i15"/>'
            "</a></span>"
            f'<a class="result__url" href="{href}">{shown}</a></div></div>\n'
            f'    <a class="result__snippet" href="{href}">'
            f"{_bold(doc.snippet, terms, '<b>', '</b>')}</a>\n"
            '    <div class="clear"></div>\n  </div>\n</div>'
        )
    if not docs:
        rows = ['<div class="no-results">No results.</div>']
    body = "\n".join(rows)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(query)} at DuckDuckGo</title></head><body>"
        '<div id="links" class="results">\n'
        f"{body}\n"
        '<div class="nav-link"><form action="/html/" method="post">'
        '<input type="submit" class="btn btn--alt" value="Next"/>'
        f'<input type="hidden" name="q" value="{html.escape(query)}"/>'
        '<input type="hidden" name="s" value="10"/></form></div>'
        "</div></body></html>"
    )


DDG_ANOMALY_PAGE = (
    "<!DOCTYPE html><html><head><title>DuckDuckGo</title></head><body>"
    '<div class="anomaly-modal__modal" data-testid="anomaly-modal">'
    '<div class="anomaly-modal__title">Unfortunately, bots use DuckDuckGo too.</div>'
    '<div class="anomaly-modal__description">Please complete the following challenge to confirm '
    "this search was made by a human.</div>"
    '<form id="challenge-form" action="//duckduckgo.com/anomaly.js?sv=html&amp;cc=botnet" '
    'method="POST"><div class="anomaly-modal__puzzle"></div></form></div></body></html>'
)


def searxng_body(query: str, docs: Sequence[LabDoc]) -> dict[str, object]:
    """SearXNG's ``format=json`` answer."""
    return {
        "query": query,
        "number_of_results": 0,
        "results": [
            {
                "url": d.url,
                "title": d.title,
                "content": d.snippet,
                "engine": "duckduckgo",
                "parsed_url": [*list(urlsplit(d.url)), ""],
                "template": "default.html",
                "engines": ["duckduckgo", "brave"],
                "positions": [i + 1],
                "score": round(2.0 / (i + 1), 4),
                "category": "general",
            }
            for i, d in enumerate(docs)
        ],
        "answers": [],
        "corrections": [],
        "infoboxes": [],
        "suggestions": [],
        "unresponsive_engines": [],
    }


def brave_body(query: str, docs: Sequence[LabDoc]) -> dict[str, object]:
    """Brave Search API's web-search answer (descriptions carry <strong> highlights)."""
    terms = _fold(_SITE.sub(" ", query))
    return {
        "type": "search",
        "query": {"original": query, "show_strict_warning": False, "more_results_available": False},
        "mixed": {"type": "mixed", "main": [{"type": "web", "index": i} for i in range(len(docs))]},
        "web": {
            "type": "search",
            "family_friendly": True,
            "results": [
                {
                    "type": "search_result",
                    "title": d.title,
                    "url": d.url,
                    "is_source_local": False,
                    "is_source_both": False,
                    "description": _bold(d.snippet, terms, "<strong>", "</strong>"),
                    "profile": {"name": "LinkedIn", "url": d.url, "long_name": "linkedin.com"},
                    "language": "en",
                    "family_friendly": True,
                    "meta_url": {
                        "scheme": "https",
                        "netloc": urlsplit(d.url).netloc,
                        "hostname": urlsplit(d.url).hostname,
                        "path": urlsplit(d.url).path,
                    },
                }
                for d in docs
            ],
        },
    }


class SearchLab(Service):
    """The server plus its corpus; use as a context manager or call start()/stop()."""

    def __init__(self, docs: Sequence[LabDoc] | None = None, *, brave_key: str = BRAVE_KEY) -> None:
        self.index = _Index(load_docs() if docs is None else docs)
        self.brave_key = brave_key
        self.searxng_json = True
        """False makes /search refuse format=json, like a SearXNG with default settings."""
        self.queries: list[tuple[str, str]] = []
        """(backend, query) of every request that reached a search route."""
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("search lab is not running")
        return f"http://{LAB_HOST}:{self._server.server_address[1]}"

    @property
    def ddg_url(self) -> str:
        return f"{self.base_url}/html/"

    @property
    def brave_url(self) -> str:
        return f"{self.base_url}/res/v1/web/search"

    def env(self, backend: str) -> dict[str, str]:
        """EMAILINTEL_* variables pointing the chosen backend at this lab."""
        return {
            "EMAILINTEL_SEARCH_BACKEND": backend,
            "EMAILINTEL_DUCKDUCKGO_URL": self.ddg_url,
            "EMAILINTEL_SEARXNG_URL": self.base_url,
            "EMAILINTEL_BRAVE_URL": self.brave_url,
            "EMAILINTEL_BRAVE_KEY": self.brave_key,
        }

    def fail_next(self, count: int, kind: Failure) -> None:
        """Answer the next ``count`` search requests with the given failure."""
        with self._lock:
            self._failures.extend([kind] * count)

    def clear_failures(self) -> None:
        """Forget failures not yet served."""
        with self._lock:
            self._failures.clear()

    def _next_failure(self) -> Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def start(self) -> SearchLab:
        lab = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # one write per response: no Nagle/delayed-ACK stall
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                lab._route(self, parse_qs(urlsplit(self.path).query))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode("utf-8"))
                lab._route(self, form | parse_qs(urlsplit(self.path).query))

        self._server = ThreadingHTTPServer((LAB_HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _route(self, req: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> None:
        path = urlsplit(req.path).path
        query = (params.get("q") or [""])[0]
        if path in ("/html", "/html/"):
            backend = "duckduckgo"
        elif path == "/search":
            backend = "searxng"
            if (params.get("format") or [""])[0] != "json" or not self.searxng_json:
                _send(req, 403, "text/plain", b"Forbidden")
                return
        elif path == "/res/v1/web/search":
            backend = "brave"
            if req.headers.get("X-Subscription-Token") != self.brave_key:
                body = {
                    "type": "ErrorResponse",
                    "error": {"code": "SUBSCRIPTION_TOKEN_INVALID", "status": 401},
                }
                _send(req, 401, "application/json", json.dumps(body).encode())
                return
        else:
            _send(req, 404, "text/plain", b"not found")
            return
        with self._lock:
            self.queries.append((backend, query))
        failure = self._next_failure()
        if failure is not None:
            self._fail(req, backend, failure)
            return
        docs = self.index.search(query)
        if backend == "duckduckgo":
            _send(req, 200, "text/html; charset=UTF-8", ddg_page(query, docs).encode())
        elif backend == "searxng":
            _send(req, 200, "application/json", json.dumps(searxng_body(query, docs)).encode())
        else:
            _send(req, 200, "application/json", json.dumps(brave_body(query, docs)).encode())

    def _fail(self, req: BaseHTTPRequestHandler, backend: str, kind: Failure) -> None:
        if kind == "captcha":
            if backend == "duckduckgo":
                _send(req, 200, "text/html; charset=UTF-8", DDG_ANOMALY_PAGE.encode())
            elif backend == "searxng":
                body = searxng_body("", []) | {
                    "unresponsive_engines": [["google", "CAPTCHA"], ["duckduckgo", "CAPTCHA"]]
                }
                _send(req, 200, "application/json", json.dumps(body).encode())
            else:
                _send(req, 429, "application/json", _brave_limited())
            return
        if kind == "garbage":
            _send(req, 200, "application/json", b"\x00<html>{not json")
            return
        status = int(kind)
        if backend == "duckduckgo" and status == 202:
            _send(req, 202, "text/html; charset=UTF-8", DDG_ANOMALY_PAGE.encode())
        elif backend == "brave" and status == 429:
            _send(req, 429, "application/json", _brave_limited(), {"Retry-After": "0"})
        else:
            _send(req, status, "text/plain", f"status {status}".encode())


def _brave_limited() -> bytes:
    return json.dumps(
        {
            "type": "ErrorResponse",
            "error": {
                "code": "RATE_LIMITED",
                "status": 429,
                "detail": "Request rate limit exceeded",
            },
        }
    ).encode()


def _send(
    req: BaseHTTPRequestHandler,
    status: int,
    content_type: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    req.send_response(status)
    req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        req.send_header(k, v)
    req.end_headers()
    req.wfile.write(body)
