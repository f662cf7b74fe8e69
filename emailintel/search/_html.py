"""Parsing of DuckDuckGo's HTML result page (pure, selectolax)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

__all__ = ["ddg_results", "is_ddg_challenge", "strip_tags"]

_CHALLENGE_MARKERS = ("anomaly-modal", "challenge-form", "anomaly_modal", "/anomaly.js")


def _text(node: LexborNode | None) -> str:
    """Whitespace-collapsed text of a node ('' for a missing node)."""
    if node is None:
        return ""
    return " ".join((node.text(deep=True) or "").split())


def _target(href: str) -> str | None:
    """The real target of a result link: the ``uddg`` parameter of a redirect, or the href."""
    if not href:
        return None
    parts = urlsplit(href if "://" in href or not href.startswith("//") else "https:" + href)
    host = (parts.hostname or "").lower()
    if host.endswith("duckduckgo.com"):
        if parts.path.startswith("/y.js"):
            return None  # an ad
        values = parse_qs(parts.query).get("uddg")
        return values[0] if values else None
    return href if parts.scheme in ("http", "https") else None


def is_ddg_challenge(html: str) -> bool:
    """True for DuckDuckGo's bot-anomaly / challenge page (a rate limit in disguise)."""
    head = html[:200_000]
    return any(marker in head for marker in _CHALLENGE_MARKERS)


def ddg_results(html: str) -> list[tuple[str, str, str]]:
    """(url, title, snippet) of the organic results, in page order, ads skipped."""
    tree = LexborHTMLParser(html)
    out: list[tuple[str, str, str]] = []
    for body in tree.css("div.result"):
        classes = (body.attributes.get("class") or "").split()
        if "result--ad" in classes:
            continue
        anchor = body.css_first("a.result__a")
        if anchor is None:
            continue
        url = _target(anchor.attributes.get("href") or "")
        if url is None:
            continue
        out.append((url, _text(anchor), _text(body.css_first(".result__snippet"))))
    return out


def strip_tags(fragment: str) -> str:
    """Plain text of an HTML fragment (Brave wraps matched words in <strong>)."""
    if "<" not in fragment and "&" not in fragment:
        return " ".join(fragment.split())
    return _text(LexborHTMLParser(f"<div>{fragment}</div>").css_first("div"))
