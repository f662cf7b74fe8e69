"""Open and click tracking (pure): signed tokens, link rewriting in HTML bodies, the open pixel,
and the rule that tells people from machines.

A token names a message and a link index and carries an HMAC, so it cannot be forged or pointed
elsewhere: the click redirect looks the URL up by (message, index) in the database, never from
the token, so a tracking link is never an open redirect. Machine opens (Apple Mail Privacy
Protection's prefetch, security scanners) and bot clicks are kept and flagged, not counted as
people.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from html import escape, unescape
from html.parser import HTMLParser
from typing import Final

__all__ = [
    "HUMAN",
    "MAX_LINKS",
    "PIXEL_GIF",
    "Actor",
    "Rewritten",
    "TokenError",
    "classify_click",
    "classify_open",
    "make_token",
    "read_token",
    "rewrite_html",
]

MAX_LINKS: Final = 200
"""Links rewritten per message (later ones are left as they are)."""
PIXEL_GIF: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A transparent 1x1 GIF (43 bytes)."""
_TAG_BYTES: Final = 16
_KINDS: Final = {"o": 0, "c": 1, "u": 2}
"""Token kinds: an open, a click, a campaign unsubscribe (server.campaigns.unsubscribe)."""


class TokenError(ValueError):
    """A token that is malformed or whose signature does not match."""


def make_token(key: bytes, kind: str, message_id: str, link: int = 0) -> str:
    """A URL-safe token for an open (``kind="o"``), a click on link ``link`` (``"c"``) or an
    unsubscribe (``"u"``, ``message_id`` then names a campaign lead)."""
    if kind not in _KINDS or not 0 <= link < 65536 or not message_id.isascii():
        raise ValueError("bad token fields")
    body = struct.pack(">BH", _KINDS[kind], link) + message_id.encode("ascii")
    tag = hmac.new(key, body, hashlib.sha256).digest()[:_TAG_BYTES]
    return base64.urlsafe_b64encode(body + tag).rstrip(b"=").decode("ascii")


def read_token(key: bytes, token: str, kind: str) -> tuple[str, int]:
    """(message id, link index) of a token of ``kind``; TokenError otherwise."""
    if not 8 <= len(token) <= 200 or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise TokenError("malformed token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise TokenError("malformed token") from None
    if len(raw) <= 3 + _TAG_BYTES:
        raise TokenError("malformed token")
    body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    expected = hmac.new(key, body, hashlib.sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        raise TokenError("bad signature")
    code, link = struct.unpack(">BH", body[:3])
    if code != _KINDS.get(kind):
        raise TokenError("wrong token kind")
    try:
        return body[3:].decode("ascii"), link
    except UnicodeDecodeError:
        raise TokenError("malformed token") from None


@dataclass(frozen=True)
class Rewritten:
    """The HTML with tracked links and the pixel, and the original URLs by link index."""

    html: str
    links: tuple[str, ...]


_HREF = re.compile(r"""(\bhref\s*=\s*)("[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)
_TRACKABLE = re.compile(r"^https?://", re.IGNORECASE)


class _Anchors(HTMLParser):
    """Collects the source span of every ``<a>`` start tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[int, int, str]] = []  # (line, column, raw start tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            raw = self.get_starttag_text()
            if raw is not None:
                line, column = self.getpos()
                self.tags.append((line, column, raw))


def rewrite_html(
    html: str,
    click_url: Callable[[int], str],
    pixel_url: str | None,
    *,
    skip: Callable[[str], bool] = lambda _url: False,
) -> Rewritten:
    """Point each ``http(s)`` link (not ``skip``-ped, e.g. the unsubscribe link, nor marked
    ``data-notrack``) at ``click_url(index)`` and add the pixel before ``</body>`` (or at the
    end). Everything else in the HTML is left byte for byte."""
    parser = _Anchors()
    parser.feed(html)
    parser.close()
    line_starts = [0]
    for match in re.finditer("\n", html):
        line_starts.append(match.end())
    pieces: list[str] = []
    links: list[str] = []
    cursor = 0
    for line, column, raw in parser.tags:
        start = line_starts[line - 1] + column
        if html[start : start + len(raw)] != raw or start < cursor:
            continue  # a span the parser reported differently: leave it untouched
        if len(links) >= MAX_LINKS or "data-notrack" in raw.lower():
            continue
        found = _HREF.search(raw)
        if found is None:
            continue
        quoted = found.group(2)
        url = unescape(quoted.strip("\"'")).strip()
        if not _TRACKABLE.match(url) or skip(url):
            continue
        tracked = escape(click_url(len(links)), quote=True)
        new_tag = raw[: found.start(2)] + f'"{tracked}"' + raw[found.end(2) :]
        links.append(url)
        pieces.append(html[cursor:start])
        pieces.append(new_tag)
        cursor = start + len(raw)
    pieces.append(html[cursor:])
    out = "".join(pieces)
    if pixel_url is not None:
        pixel = (
            f'<img src="{escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
            'style="display:none;width:1px;height:1px;border:0" />'
        )
        closing = out.lower().rfind("</body>")
        out = out[:closing] + pixel + out[closing:] if closing >= 0 else out + pixel
    return Rewritten(out, tuple(links))


class Actor(StrEnum):
    """Who made an open or a click."""

    PERSON = "person"
    APPLE_PRIVACY = "apple_privacy"
    """Apple Mail Privacy Protection fetched the images (not a person reading)."""
    IMAGE_PROXY = "image_proxy"
    """Gmail's or another webmail's image proxy: fetched when the person opens, so a person."""
    SCANNER = "scanner"
    """A security gateway or link scanner."""


HUMAN: Final = frozenset({Actor.PERSON, Actor.IMAGE_PROXY})
"""Actors counted as people (a webmail image proxy fetches when its reader opens)."""

_SCANNER_AGENTS: Final = re.compile(
    r"barracuda|mimecast|proofpoint|safelinks|bingpreview|symantec|forcepoint|cisco|ironport|"
    r"trendmicro|sophos|fortiguard|zscaler|python-requests|curl/|wget/|go-http-client|"
    r"headlesschrome|phantomjs|googlebot|bingbot|slackbot|twitterbot|linkedinbot|"
    r"facebookexternalhit|crawler|spider|slurp",
    re.IGNORECASE,
)
_APPLE: Final = (ipaddress.ip_network("17.0.0.0/8"),)
"""Apple's own network; Private Relay egress ranges are also Apple's (a deployment may load the
published list into ``apple_ranges``)."""
SCANNER_WINDOW: Final = 10.0
"""A click this soon after the message was handed over is a scanner's, not a reader's."""


def _in(
    address: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks if net.version == ip.version)


def classify_open(
    user_agent: str,
    address: str | None,
    *,
    apple_ranges: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _APPLE,
) -> Actor:
    """Who fetched the pixel, by user agent and address (total: any input has an answer)."""
    agent = user_agent[:512]
    if "googleimageproxy" in agent.lower() or "yahoomailproxy" in agent.lower():
        return Actor.IMAGE_PROXY
    if _SCANNER_AGENTS.search(agent):
        return Actor.SCANNER
    if _in(address, apple_ranges):
        return Actor.APPLE_PRIVACY
    if agent.strip() in ("", "Mozilla/5.0"):  # MPP's bare agent from a relay address
        return Actor.APPLE_PRIVACY
    return Actor.PERSON


def classify_click(
    user_agent: str, method: str, seconds_after_send: float | None, opened_before: bool
) -> Actor:
    """Who followed a link: HEAD requests, scanner agents and clicks within
    :data:`SCANNER_WINDOW` of the hand-over without an open are machines."""
    if method.upper() == "HEAD" or _SCANNER_AGENTS.search(user_agent[:512]):
        return Actor.SCANNER
    if seconds_after_send is not None and seconds_after_send < SCANNER_WINDOW and not opened_before:
        return Actor.SCANNER
    return Actor.PERSON
