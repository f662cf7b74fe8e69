"""Tracking (pure): tokens that cannot be forged or re-aimed, link rewriting that leaves the rest
of the HTML alone, and the person/machine rule for opens and clicks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.mail.tracking import (
    MAX_LINKS,
    Actor,
    TokenError,
    classify_click,
    classify_open,
    make_token,
    read_token,
    rewrite_html,
)

KEY = b"t" * 32


def test_tokens_round_trip_and_refuse_forgery() -> None:
    token = make_token(KEY, "c", "eml_01JF0000000000000000000000", 7)
    assert read_token(KEY, token, "c") == ("eml_01JF0000000000000000000000", 7)
    with pytest.raises(TokenError, match="kind"):
        read_token(KEY, token, "o")
    with pytest.raises(TokenError, match="signature"):
        read_token(b"x" * 32, token, "c")
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    with pytest.raises(TokenError):
        read_token(KEY, flipped, "c")
    opened = make_token(KEY, "o", "eml_1")
    assert read_token(KEY, opened, "o") == ("eml_1", 0)
    with pytest.raises(ValueError, match="bad token"):
        make_token(KEY, "x", "eml_1")


@given(st.text(max_size=300))
def test_read_token_raises_only_token_error(text: str) -> None:
    try:
        read_token(KEY, text, "c")
    except TokenError:
        pass
    else:  # pragma: no cover - a random text would have to carry a valid HMAC
        raise AssertionError("a random token verified")


def _click(index: int) -> str:
    return f"https://t.example/c/{index}?a=1&b=2"


def test_rewrite_tracks_http_links_and_leaves_the_rest() -> None:
    html = (
        "<html><body><p>Hi <b>Ann</b></p>\n"
        '<a href="https://acme.example/pricing?x=1&amp;y=2">pricing</a>\n'
        "<A HREF='http://acme.example/blog'>blog</A> <a href=https://acme.example/u>u</a>\n"
        '<a href="mailto:ann@acme.example">mail</a> <a href="#top">top</a> '
        '<a href="tel:+331">call</a> <a name="x">anchor</a>\n'
        '<a data-notrack href="https://acme.example/private">private</a>\n'
        '<a href="https://acme.example/unsubscribe/abc">unsubscribe</a>\n'
        "</body></html>"
    )
    out = rewrite_html(
        html, _click, "https://t.example/o/1.gif", skip=lambda url: "/unsubscribe/" in url
    )
    assert out.links == (
        "https://acme.example/pricing?x=1&y=2",
        "http://acme.example/blog",
        "https://acme.example/u",
    )
    assert 'href="https://t.example/c/0?a=1&amp;b=2"' in out.html
    assert '<A HREF="https://t.example/c/1?a=1&amp;b=2">blog</A>' in out.html
    for kept in ("mailto:ann@acme.example", "#top", "tel:+331", "/private", "/unsubscribe/abc"):
        assert kept in out.html
    assert "acme.example/pricing" not in out.html
    assert out.html.index("t.example/o/1.gif") < out.html.index("</body>")
    assert out.html.startswith("<html><body><p>Hi <b>Ann</b></p>\n")


def test_rewrite_without_body_or_pixel_and_bounded() -> None:
    html = "".join(f'<a href="https://x.example/{n}">{n}</a>' for n in range(MAX_LINKS + 5))
    out = rewrite_html(html, _click, None)
    assert len(out.links) == MAX_LINKS
    assert f'href="https://x.example/{MAX_LINKS + 1}"' in out.html
    assert "<img" not in out.html
    plain = rewrite_html("<p>no links</p>", _click, "https://t.example/o.gif")
    assert plain.html.startswith("<p>no links</p><img")


@given(st.text(max_size=500))
def test_rewrite_never_raises_and_keeps_text_without_links(text: str) -> None:
    out = rewrite_html(text, _click, None)
    if not out.links:
        assert out.html == text


@pytest.mark.parametrize(
    ("agent", "address", "actor"),
    [
        ("Mozilla/5.0 (Windows NT 10.0) Chrome/120 Safari/537.36", "203.0.113.9", Actor.PERSON),
        ("Mozilla/5.0", "17.58.1.2", Actor.APPLE_PRIVACY),
        ("Mozilla/5.0", "198.51.100.4", Actor.APPLE_PRIVACY),
        ("", None, Actor.APPLE_PRIVACY),
        ("Mozilla/5.0 (iPhone) AppleWebKit", "17.1.2.3", Actor.APPLE_PRIVACY),
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            "66.249.1.1",
            Actor.IMAGE_PROXY,
        ),
        ("Barracuda Sentinel (EE)", "64.235.1.1", Actor.SCANNER),
        ("python-requests/2.31", "198.51.100.4", Actor.SCANNER),
        ("Mozilla/5.0", "not-an-ip", Actor.APPLE_PRIVACY),
    ],
)
def test_open_classification(agent: str, address: str | None, actor: Actor) -> None:
    assert classify_open(agent, address) is actor


def test_click_classification() -> None:
    browser = "Mozilla/5.0 (Macintosh) Safari/605.1.15"
    assert classify_click(browser, "GET", 3600.0, opened_before=True) is Actor.PERSON
    assert classify_click(browser, "HEAD", 3600.0, opened_before=True) is Actor.SCANNER
    assert classify_click(browser, "GET", 2.0, opened_before=False) is Actor.SCANNER
    assert classify_click(browser, "GET", 2.0, opened_before=True) is Actor.PERSON
    assert classify_click("Mimecast URL Protect", "GET", 9999.0, True) is Actor.SCANNER
    assert classify_click(browser, "GET", None, opened_before=False) is Actor.PERSON


@given(st.text(max_size=600), st.one_of(st.none(), st.text(max_size=60)))
def test_open_classification_is_total(agent: str, address: str | None) -> None:
    assert classify_open(agent, address) in set(Actor)
