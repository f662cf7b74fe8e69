"""The search lab itself: matching, site filter, formats, failure injection, the corpus."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from lab.searchlab import EVAL_DATA, LabDoc, SearchLab, load_docs

DOCS = [
    LabDoc(
        "https://uk.linkedin.com/in/jane-doe-1a2b",
        "Jane Doe - CTO - Acme | LinkedIn",
        "Experience: Acme",
    ),
    LabDoc(
        "https://www.linkedin.com/in/jose-garcia",
        "José García - Zenith | LinkedIn",
        "Experience: Zenith",
    ),
    LabDoc("https://www.linkedin.com/company/acme", "Acme | LinkedIn", "Acme, 2,000 followers"),
    LabDoc("https://example.com/jane", "Jane Doe's blog", "Acme stories"),
]


@pytest.fixture(scope="module")
def small_lab() -> Iterator[SearchLab]:
    with SearchLab(DOCS) as lab:
        yield lab


def test_matching_folds_diacritics_and_honours_site(small_lab: SearchLab) -> None:
    index = small_lab.index
    assert [d.url for d in index.search('"Jose Garcia" site:linkedin.com/in')] == [DOCS[1].url]
    urls = [d.url for d in index.search('"Jane Doe" Acme site:linkedin.com/in')]
    assert urls[0] == DOCS[0].url
    assert DOCS[3].url not in urls
    assert DOCS[3].url in [d.url for d in index.search('"Jane Doe" Acme')]
    assert index.search("site:linkedin.com/in") == []
    assert index.search("Nobody Here Whatsoever") == []


def test_routes_and_formats(small_lab: SearchLab) -> None:
    with httpx.Client() as client:
        ddg = client.post(small_lab.ddg_url, data={"q": "Jane Doe Acme"})
        assert ddg.status_code == 200
        assert "result__a" in ddg.text
        assert "uddg=" in ddg.text
        sx = client.get(f"{small_lab.base_url}/search", params={"q": "Jane Doe", "format": "json"})
        assert sx.json()["results"][0]["url"] == DOCS[0].url
        assert client.get(f"{small_lab.base_url}/search", params={"q": "Jane"}).status_code == 403
        headers = {"X-Subscription-Token": small_lab.brave_key}
        br = client.get(small_lab.brave_url, params={"q": "Jane Doe"}, headers=headers)
        assert br.json()["web"]["results"][0]["url"] == DOCS[0].url
        assert client.get(small_lab.brave_url, params={"q": "Jane"}).status_code == 401
        assert client.get(f"{small_lab.base_url}/other").status_code == 404


def test_failure_injection_counts_down(small_lab: SearchLab) -> None:
    small_lab.fail_next(2, "999")
    with httpx.Client() as client:
        codes = [client.post(small_lab.ddg_url, data={"q": "Jane"}).status_code for _ in range(3)]
    assert codes == [999, 999, 200]
    small_lab.fail_next(5, "429")
    small_lab.clear_failures()
    with httpx.Client() as client:
        assert client.post(small_lab.ddg_url, data={"q": "Jane"}).status_code == 200


def test_not_running_has_no_url() -> None:
    with pytest.raises(RuntimeError):
        _ = SearchLab(DOCS).base_url


def test_evaluation_corpus_shape() -> None:
    data = json.loads(EVAL_DATA.read_text(encoding="utf-8"))
    cases = data["cases"]
    with_profile = [c for c in cases if c["expected"]]
    assert len(with_profile) >= 100
    assert sum(1 for c in cases if c["expected"] is None) >= 20
    assert {c["split"] for c in cases} == {"train", "test"}
    urls = {p["url"] for p in data["profiles"]}
    assert all(c["expected"] in urls for c in with_profile)
    tags = {t for c in cases for t in c["tags"]}
    assert {"nickname", "diacritics", "particle", "hyphenated", "twin", "none"} <= tags
    assert len(load_docs()) == len(data["profiles"]) + len(data["pages"])
