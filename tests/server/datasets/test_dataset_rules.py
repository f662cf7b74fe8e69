"""Pure dataset rules: risk columns, the prune threshold, email column detection, export
headers, formula neutralising and download file names (property tests)."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from server.datasets.rules import (
    RISK_LEVELS,
    above,
    detect_email_column,
    download_filename,
    export_columns,
    failure_cells,
    neutralise,
    risk_cells,
    stored_risk,
)

levels = st.sampled_from(RISK_LEVELS)
scores = st.integers(min_value=0, max_value=100)
thresholds = st.one_of(levels, scores)
verified = st.builds(lambda level, score: {"risk": level, "risk_score": score}, levels, scores)
junk = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.none(), st.integers(), st.text(max_size=8), st.booleans()),
    max_size=4,
).filter(lambda d: d.get("risk") not in RISK_LEVELS)


@given(verified, levels)
def test_a_level_threshold_removes_exactly_the_riskier_levels(
    row: dict[str, Any], level: str
) -> None:
    assert above(row, level) is (RISK_LEVELS.index(row["risk"]) > RISK_LEVELS.index(level))


@given(verified, scores)
def test_a_score_threshold_removes_exactly_the_higher_scores(
    row: dict[str, Any], limit: int
) -> None:
    assert above(row, limit) is (row["risk_score"] > limit)


@given(junk, thresholds)
def test_rows_never_verified_are_neither_above_nor_below(row: dict[str, Any], limit: Any) -> None:
    assert above(row, limit) is None
    assert stored_risk(row) is None


@given(verified, thresholds, thresholds)
def test_a_looser_threshold_never_removes_more(row: dict[str, Any], a: Any, b: Any) -> None:
    if type(a) is type(b):
        strict, loose = (a, b) if _rank(a) <= _rank(b) else (b, a)
        if above(row, loose):
            assert above(row, strict)


def _rank(threshold: Any) -> int:
    return RISK_LEVELS.index(threshold) if isinstance(threshold, str) else int(threshold)


def test_nothing_is_above_high_or_100() -> None:
    for level in RISK_LEVELS:
        assert above({"risk": level, "risk_score": 100}, "high") is False
        assert above({"risk": level, "risk_score": 100}, 100) is False


def test_a_verified_row_without_a_score_compares_by_its_level_bound() -> None:
    assert above({"risk": "high"}, 99) is True
    assert above({"risk": "low"}, 33) is False
    assert above({"risk": "low", "risk_score": True}, 10) is True  # a bool is not a score


def test_risk_cells_of_verify_results() -> None:
    valid = {
        "verdict": "valid",
        "score": 90,
        "reasons": ["smtp_accepted"],
        "smtp": {"checked": True, "accepted": True},
    }
    assert risk_cells(valid) == {
        "risk": "low",
        "risk_score": 10,
        "verdict": "valid",
        "smtp_status": "accepted",
        "reason": "smtp_accepted",
    }
    gone = {
        "verdict": "invalid",
        "score": 0,
        "reasons": [],
        "smtp": {"checked": True, "accepted": False, "mailbox_not_found": True},
    }
    assert risk_cells(gone)["risk"] == "high"
    assert risk_cells(gone)["smtp_status"] == "mailbox_not_found"
    assert risk_cells(gone)["reason"] is None
    catch_all = {"verdict": "risky", "score": 50, "smtp": {"checked": True, "catch_all": True}}
    assert (risk_cells(catch_all)["risk"], risk_cells(catch_all)["smtp_status"]) == (
        "medium",
        "catch_all",
    )
    assert risk_cells({"verdict": "unknown", "score": 500})["risk_score"] is None
    assert risk_cells({"verdict": 3})["risk"] is None
    assert risk_cells({"verdict": "invalid", "smtp": None})["smtp_status"] == "not_checked"
    assert above(failure_cells("smtp_unavailable"), "low") is None


@given(st.lists(st.text(alphabet=string.ascii_letters + " _", min_size=1, max_size=12), max_size=6))
def test_a_known_email_header_wins(columns: list[str]) -> None:
    found = detect_email_column([*columns, "E-Mail Address"])
    assert found is not None
    assert "mail" in found.lower()


def test_email_detection_by_header_then_values() -> None:
    assert detect_email_column(["Name", "Work_Email"]) == "Work_Email"
    assert detect_email_column(["Name", "EMAIL"]) == "EMAIL"
    sample = [{"a": "x", "b": "ann@acme.test"}, {"a": "y", "b": "bo@acme.test"}, {"b": ""}]
    assert detect_email_column(["a", "b"], sample) == "b"
    assert detect_email_column(["a", "b"], [{"a": "x", "b": "y@z"}]) is None
    assert detect_email_column([], []) is None


@given(
    st.lists(st.text(max_size=6), max_size=6, unique=True),
    st.lists(st.text(max_size=6), max_size=6, unique=True),
)
def test_export_headers_are_unique_and_originals_come_first(
    columns: list[str], added: list[str]
) -> None:
    out = export_columns(columns, added)
    headers = [c.header for c in out]
    assert len(set(headers)) == len(headers)
    assert headers[: len(columns)] == columns
    assert [c.key for c in out] == [*columns, *added]
    assert [c.added for c in out] == [False] * len(columns) + [True] * len(added)


@given(st.text(max_size=20))
def test_neutralised_cells_never_start_a_formula(text: str) -> None:
    safe = neutralise(text)
    assert not safe.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert safe in (text, "'" + text)
    for start in "=+-@":
        assert neutralise(start + text) == "'" + start + text


@given(st.text(max_size=300), st.sampled_from(["csv", "xlsx", "json"]))
def test_download_names_are_safe_ascii(name: str, extension: str) -> None:
    filename = download_filename(name, extension)
    assert filename.isascii()
    assert filename.endswith("." + extension)
    stem = filename[: -len(extension) - 1]
    assert stem
    assert not stem.startswith(".")
    assert len(stem) <= 100
    assert not set(stem) - set(string.ascii_letters + string.digits + "._ -")


def test_download_name_examples() -> None:
    assert download_filename('Q3 leads: Zürich / "VIP"', "csv") == "Q3 leads Zurich VIP.csv"
    assert download_filename("../../etc/passwd", "json") == "etc passwd.json"
    assert download_filename("\r\n", "xlsx") == "dataset.xlsx"
