"""Frozen models of the LinkedIn finder: raw search hits, scored candidates and the result."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CandidateEvidence", "LinkedInCandidate", "LinkedInResult", "SearchHit"]


class SearchHit(BaseModel):
    """One organic result as a backend returned it (URL not yet normalised)."""

    model_config = ConfigDict(frozen=True)

    url: str
    title: str = ""
    snippet: str = ""
    rank: int = Field(default=0, ge=0)
    backend: str = ""


class CandidateEvidence(BaseModel):
    """Why a candidate got its score: each signal in 0-1 (None = not asked for), and its origin."""

    model_config = ConfigDict(frozen=True)

    slug_similarity: float = Field(ge=0.0, le=1.0)
    name_in_title: float = Field(ge=0.0, le=1.0)
    company_match: float = Field(ge=0.0, le=1.0)
    title_match: float | None = Field(default=None, ge=0.0, le=1.0)
    location_match: float | None = Field(default=None, ge=0.0, le=1.0)
    ambiguity_penalty: float = Field(default=0.0, ge=0.0, le=1.0)
    same_name_hits: int = Field(default=1, ge=0)
    query: str = ""
    backend: str = ""
    rank: int = Field(default=0, ge=0)


class LinkedInCandidate(BaseModel):
    """A normalised profile URL with its 0-1 score and the evidence behind it."""

    model_config = ConfigDict(frozen=True)

    url: str
    score: float = Field(ge=0.0, le=1.0)
    title: str = ""
    snippet: str = ""
    evidence: CandidateEvidence


class LinkedInResult(BaseModel):
    """The finder's answer: ranked matches above the threshold (maybe none) and what was tried."""

    model_config = ConfigDict(frozen=True)

    name: str
    company: str
    matches: tuple[LinkedInCandidate, ...] = ()
    best: LinkedInCandidate | None = None
    candidates: tuple[LinkedInCandidate, ...] = ()
    queries: tuple[str, ...] = ()
    threshold: float = Field(ge=0.0, le=1.0)
