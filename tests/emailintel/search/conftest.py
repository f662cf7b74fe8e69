"""The search lab shared by the LinkedIn-finder tests, serving the evaluation corpus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from lab.searchlab import EVAL_DATA, SearchLab


@pytest.fixture(scope="session")
def search_lab() -> Iterator[SearchLab]:
    """One loopback server for the session; tests that inject failures drain them themselves."""
    with SearchLab() as lab:
        yield lab


@pytest.fixture(scope="session")
def eval_cases() -> dict[str, dict[str, Any]]:
    """The labelled cases of the evaluation set, by id."""
    data = json.loads(EVAL_DATA.read_text(encoding="utf-8"))
    return {c["id"]: c for c in data["cases"]}


@pytest.fixture
def lab(search_lab: SearchLab) -> Iterator[SearchLab]:
    """The shared lab, with no failure left queued after the test."""
    search_lab.clear_failures()
    yield search_lab
    search_lab.clear_failures()
