"""LinkedIn profile-URL finder: search backends, URL normalisation, candidate scoring."""

from __future__ import annotations

from emailintel.search.engines import (
    Backoff,
    BraveSearch,
    DuckDuckGoSearch,
    HttpSearchEngine,
    SearchEngine,
    SearxngSearch,
    engine_from_env,
)
from emailintel.search.finder import find_linkedin, query_ladder
from emailintel.search.models import (
    CandidateEvidence,
    LinkedInCandidate,
    LinkedInResult,
    SearchHit,
)
from emailintel.search.urls import is_profile_url, normalize_profile_url, profile_slug

__all__ = [
    "Backoff",
    "BraveSearch",
    "CandidateEvidence",
    "DuckDuckGoSearch",
    "HttpSearchEngine",
    "LinkedInCandidate",
    "LinkedInResult",
    "SearchEngine",
    "SearchHit",
    "SearxngSearch",
    "engine_from_env",
    "find_linkedin",
    "is_profile_url",
    "normalize_profile_url",
    "profile_slug",
    "query_ladder",
]
