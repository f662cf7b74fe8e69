"""Redact URLs in text bound for the log: keep scheme and host, drop credentials, path and query.

Provider keys live in RPC and search-backend URLs (path, query or userinfo), and upstream error
messages quote those URLs; the log keeps only enough to tell which upstream failed.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

__all__ = ["MAX_LOGGED", "RedactUrls", "redact", "redact_client_logs", "redact_url"]

MAX_LOGGED = 500
"""Longest redacted text :func:`redact` returns (upstream pages can be long)."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>(){}]*")


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (``scheme://?`` when it has no readable host)."""
    scheme = url.partition("://")[0].lower()
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "?", parts.port
    except ValueError:  # a bad port or an unclosed IPv6 bracket
        host, port = "?", None
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def redact(text: str, limit: int = MAX_LOGGED) -> str:
    """``text`` with every URL reduced to scheme and host, cut to ``limit`` characters."""
    cleaned = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class RedactUrls(logging.Filter):
    """Rewrite a record's message with every URL reduced to scheme and host (httpx logs each
    request's full URL at INFO, keys in the path or query included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def redact_client_logs() -> None:
    """Install :class:`RedactUrls` on the HTTP client libraries' loggers (once)."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrls) for f in logger.filters):
            logger.addFilter(RedactUrls())
