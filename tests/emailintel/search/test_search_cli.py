"""The ``emailintel linkedin`` subcommand: table, JSON, explicit no match, config errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lab.searchlab import SearchLab

from emailintel import cli


def _use_lab(lab: SearchLab, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    for key, value in lab.env(backend).items():
        monkeypatch.setenv(key, value)


def _found(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in cases.values() if c["tags"][0] == "nickname")


def test_table_lists_ranked_candidates_with_evidence(
    lab: SearchLab,
    eval_cases: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use_lab(lab, monkeypatch, "brave")
    case = _found(eval_cases)
    code = cli.main(["linkedin", case["name"], "--company", case["company"]])
    out = capsys.readouterr().out
    assert code == 0
    header, first = out.splitlines()[:2]
    assert header.split() == ["#", "SCORE", "URL", "SLUG", "NAME", "COMPANY", "AMBIGUITY", "QUERY"]
    assert first.split()[0] == "1"
    assert first.split()[2] == case["expected"]
    assert "no match" not in out


def test_json_output_and_backend_flag(
    lab: SearchLab,
    eval_cases: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use_lab(lab, monkeypatch, "brave")
    case = _found(eval_cases)
    before = len(lab.queries)
    code = cli.main(
        ["linkedin", case["name"], "--company", case["company"], "--json", "--backend", "searxng"]
    )
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    assert body["best"]["url"] == case["expected"]
    assert body["best"]["evidence"]["backend"] == "searxng"
    assert set(body["best"]["evidence"]) >= {
        "slug_similarity",
        "name_in_title",
        "company_match",
        "title_match",
        "location_match",
        "ambiguity_penalty",
        "query",
        "backend",
    }
    assert {b for b, _ in lab.queries[before:]} == {"searxng"}


def test_no_match_is_explicit(
    lab: SearchLab,
    eval_cases: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use_lab(lab, monkeypatch, "duckduckgo")
    case = next(c for c in eval_cases.values() if c["expected"] is None)
    code = cli.main(["linkedin", case["name"], "--company", case["company"]])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith(f"no match for {case['name']!r}")
    code = cli.main(["linkedin", case["name"], "--company", case["company"], "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 1
    assert body["best"] is None
    assert body["matches"] == []


def test_no_result_at_all(
    lab: SearchLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use_lab(lab, monkeypatch, "searxng")
    code = cli.main(["linkedin", "Zyxw Qvutsr", "--company", "Nonexistent Widgets"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines() == [
        "no match for 'Zyxw Qvutsr' at 'Nonexistent Widgets' (threshold 0.60, 3 queries)"
    ]


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"EMAILINTEL_SEARCH_BACKEND": "searxng"}, [], "EMAILINTEL_SEARXNG_URL"),
        ({}, ["--backend", "brave"], "EMAILINTEL_BRAVE_KEY"),
        ({}, ["--limit", "0"], "limit"),
    ],
)
def test_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    argv: list[str],
    message: str,
) -> None:
    for key in ("EMAILINTEL_SEARCH_BACKEND", "EMAILINTEL_SEARXNG_URL", "EMAILINTEL_BRAVE_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["linkedin", "Jane Doe", "--company", "Acme", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("emailintel linkedin: ")
    assert message in err


def test_company_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["linkedin", "Jane Doe"])
    assert info.value.code == 2
    assert "--company" in capsys.readouterr().err
