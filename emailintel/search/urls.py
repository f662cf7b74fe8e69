"""LinkedIn profile-URL normalisation: one canonical string per member profile, or a typed error.

Pure. Canonical forms are ``https://www.linkedin.com/in/<slug>`` and, for legacy public
profiles, ``https://www.linkedin.com/pub/<slug>/<a>/<b>/<c>``. The slug is percent-decoded,
NFC-normalised and lower-cased (LinkedIn slugs are case-insensitive), so a slug may hold
non-ASCII letters (``/in/jörg-müller``).

Legacy ``/pub/`` URLs are kept in their own canonical form and never rewritten to ``/in/``:
LinkedIn redirects them, but the target slug is whatever the member chose later, so any
offline mapping would be a guess.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal
from urllib.parse import unquote, urlsplit

from emailintel.errors import ProfileUrlError

__all__ = ["ProfileKind", "is_profile_url", "normalize_profile_url", "profile_slug"]

ProfileKind = Literal["in", "pub"]

MAX_URL_CHARS = 2048
_CANONICAL_HOST = "www.linkedin.com"
_SUBDOMAIN = re.compile(r"^(?:www|m|[a-z]{2})$")
_SLUG = re.compile(r"^[^\W_](?:[\w-]{0,198}[^\W_])?$")
_PUB_SEGMENT = re.compile(r"^[0-9a-z]{1,3}$")
_SCHEMELESS = re.compile(r"^(?://)?(?:[a-z0-9-]+\.)*linkedin\.com(?:[:/?#]|$)", re.IGNORECASE)


def _split(url: str) -> tuple[str, list[str]]:
    """Host and non-empty path segments of an absolute or scheme-less URL."""
    text = url.strip()
    if not text or len(text) > MAX_URL_CHARS:
        raise ProfileUrlError("empty or overlong URL")
    if "://" not in text:
        if not _SCHEMELESS.match(text):
            raise ProfileUrlError(f"not a LinkedIn URL: {url!r}")
        text = "https://" + text.lstrip("/")
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError as exc:
        raise ProfileUrlError(f"unparsable URL: {url!r}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ProfileUrlError(f"not an http(s) URL: {url!r}")
    return host, [s for s in parts.path.split("/") if s]


def _check_host(host: str, url: str) -> None:
    """Accept linkedin.com, www., m. and two-letter country subdomains; nothing else."""
    if host == "linkedin.com":
        return
    sub, _, domain = host.partition(".")
    if domain != "linkedin.com" or not _SUBDOMAIN.match(sub):
        raise ProfileUrlError(f"not a LinkedIn host: {url!r}")


def _slug(raw: str, url: str) -> str:
    """Percent-decoded, NFC, lower-case slug; refused when it holds anything but word chars and -."""
    slug = unicodedata.normalize("NFC", unquote(raw, errors="strict")).lower()
    slug = unicodedata.normalize("NFC", slug)
    if not _SLUG.match(slug):
        raise ProfileUrlError(f"not a profile slug: {raw!r} in {url!r}")
    return slug


def _parse(url: str) -> tuple[ProfileKind, str, tuple[str, ...]]:
    """(kind, slug, pub segments) of a profile URL, or ProfileUrlError."""
    host, segments = _split(url)
    _check_host(host, url)
    if len(segments) >= 2 and segments[0].lower() == "in":
        # /in/<slug>/details/..., /in/<slug>/de, /in/<slug>/recent-activity: all the same member
        try:
            return "in", _slug(segments[1], url), ()
        except UnicodeDecodeError as exc:
            raise ProfileUrlError(f"bad percent-encoding in {url!r}") from exc
    if len(segments) >= 5 and segments[0].lower() == "pub" and segments[1].lower() != "dir":
        tail = tuple(s.lower() for s in segments[2:5])
        if all(_PUB_SEGMENT.match(s) for s in tail):
            try:
                return "pub", _slug(segments[1], url), tail
            except UnicodeDecodeError as exc:
                raise ProfileUrlError(f"bad percent-encoding in {url!r}") from exc
    raise ProfileUrlError(f"not a member profile URL: {url!r}")


def normalize_profile_url(url: str) -> str:
    """The canonical profile URL; :class:`ProfileUrlError` for anything that is not a profile."""
    kind, slug, tail = _parse(url)
    if kind == "in":
        return f"https://{_CANONICAL_HOST}/in/{slug}"
    return f"https://{_CANONICAL_HOST}/pub/{slug}/{'/'.join(tail)}"


def profile_slug(url: str) -> str:
    """The decoded member slug of a profile URL (``jane-doe-1a2b3c``)."""
    return _parse(url)[1]


def is_profile_url(url: str) -> bool:
    """True when :func:`normalize_profile_url` would accept the URL."""
    try:
        _parse(url)
    except ProfileUrlError:
        return False
    return True
