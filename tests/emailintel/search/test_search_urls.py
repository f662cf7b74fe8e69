"""LinkedIn profile-URL normalisation: canonical forms, rejects, idempotence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.errors import ProfileUrlError
from emailintel.search.urls import is_profile_url, normalize_profile_url, profile_slug

CANON = "https://www.linkedin.com/in/jane-doe-1a2b3c"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.linkedin.com/in/jane-doe-1a2b3c", CANON),
        ("https://uk.linkedin.com/in/jane-doe-1a2b3c", CANON),
        ("https://de.linkedin.com/in/jane-doe-1a2b3c/", CANON),
        ("http://linkedin.com/in/jane-doe-1a2b3c", CANON),
        ("https://m.linkedin.com/in/jane-doe-1a2b3c", CANON),
        ("linkedin.com/in/jane-doe-1a2b3c", CANON),
        ("//fr.linkedin.com/in/jane-doe-1a2b3c", CANON),
        ("https://www.linkedin.com/in/Jane-Doe-1A2B3C", CANON),
        ("https://www.LinkedIn.com./in/jane-doe-1a2b3c", CANON),
        (
            "https://www.linkedin.com/in/jane-doe-1a2b3c?trk=public_profile&originalSubdomain=uk",
            CANON,
        ),
        ("https://www.linkedin.com/in/jane-doe-1a2b3c#experience", CANON),
        ("https://www.linkedin.com/in/jane-doe-1a2b3c/de", CANON),
        ("https://www.linkedin.com/in/jane-doe-1a2b3c/details/experience/", CANON),
        ("https://www.linkedin.com/in/jane-doe-1a2b3c/recent-activity/all/", CANON),
        ("  https://www.linkedin.com/in/jane-doe-1a2b3c  ", CANON),
        (
            "https://de.linkedin.com/in/j%C3%B6rg-m%C3%BCller-8a7b6c",
            "https://www.linkedin.com/in/jörg-müller-8a7b6c",
        ),
        (
            "https://www.linkedin.com/pub/john-smith/1a/2b3/4c5",
            "https://www.linkedin.com/pub/john-smith/1a/2b3/4c5",
        ),
        (
            "https://uk.linkedin.com/pub/John-Smith/1A/2b3/4c5/?trk=x",
            "https://www.linkedin.com/pub/john-smith/1a/2b3/4c5",
        ),
    ],
)
def test_normalises_to_canonical(raw: str, expected: str) -> None:
    assert normalize_profile_url(raw) == expected
    assert is_profile_url(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "https://www.linkedin.com/company/acme-robotics",
        "https://www.linkedin.com/posts/jane-doe_excited-activity-7123",
        "https://www.linkedin.com/jobs/view/1234567890",
        "https://www.linkedin.com/school/pinecrest-university/",
        "https://www.linkedin.com/pulse/what-i-learned-jane-doe",
        "https://www.linkedin.com/in/",
        "https://www.linkedin.com/in",
        "https://www.linkedin.com/feed/",
        "https://www.linkedin.com/pub/dir/John/Smith",
        "https://www.linkedin.com/pub/john-smith/1a/2b3",
        "https://www.linkedin.com/pub/john-smith/1a/2b3x4/4c5",
        "https://evil-linkedin.com/in/jane-doe",
        "https://linkedin.com.evil.example/in/jane-doe",
        "https://www.foo.linkedin.com/in/jane-doe",
        "https://jobs.linkedin.com/in/jane-doe",
        "ftp://www.linkedin.com/in/jane-doe",
        "https://example.com/in/jane-doe",
        "example.com/in/jane-doe",
        "https://www.linkedin.com/in/jane%2Fdoe",
        "https://www.linkedin.com/in/jane%20doe",
        "https://www.linkedin.com/in/%FF%FE",
        "https://www.linkedin.com/in/-jane",
        "https://www.linkedin.com/in/jane_",
        "https://[::1/in/jane",
        "https://www.linkedin.com/in/" + "a" * 3000,
    ],
)
def test_rejects_non_profiles(raw: str) -> None:
    with pytest.raises(ProfileUrlError):
        normalize_profile_url(raw)
    assert not is_profile_url(raw)


def test_profile_slug_is_decoded() -> None:
    assert profile_slug("https://de.linkedin.com/in/j%C3%B6rg-m%C3%BCller/") == "jörg-müller"
    assert profile_slug("https://www.linkedin.com/pub/john-smith/1a/2b3/4c5") == "john-smith"


_slug_text = st.text(
    alphabet=st.characters(categories=("Ll", "Lu", "Nd"), max_codepoint=0x2FF) | st.just("-"),
    min_size=1,
    max_size=30,
)
_hosts = st.sampled_from(
    [
        "https://www.linkedin.com",
        "http://uk.linkedin.com",
        "https://linkedin.com",
        "de.linkedin.com",
    ]
)
_tails = st.sampled_from(["", "/", "/de", "/details/experience/", "?trk=x", "#a", "/?a=1#b"])


@given(_hosts, _slug_text, _tails)
def test_normalisation_is_idempotent_and_canonical(host: str, slug: str, tail: str) -> None:
    raw = f"{host}/in/{slug}{tail}"
    try:
        once = normalize_profile_url(raw)
    except ProfileUrlError:
        return
    assert once.startswith("https://www.linkedin.com/in/")
    assert "?" not in once
    assert "#" not in once
    assert not once.endswith("/")
    assert normalize_profile_url(once) == once
    assert profile_slug(once) == once.rsplit("/", 1)[1]


@given(st.text(max_size=80))
def test_arbitrary_text_is_canonical_or_refused(text: str) -> None:
    try:
        once = normalize_profile_url(text)
    except ProfileUrlError:
        return
    assert once.startswith(("https://www.linkedin.com/in/", "https://www.linkedin.com/pub/"))
    assert normalize_profile_url(once) == once
