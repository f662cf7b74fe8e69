"""Pydantic models of the prospect pool: an imported row, a search request, a search page."""

from __future__ import annotations

from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from server.jsontypes import NONBLANK, VISIBLE, JsonInt
from server.prospects.tags import MAX_TAG_LENGTH, normalize_tag, normalize_tags, split_tags

__all__ = [
    "MAX_LIMIT",
    "ProspectIn",
    "ProspectOut",
    "SearchFilters",
    "SearchRequest",
    "SearchResponse",
]

MAX_LIMIT = 100
MAX_TAGS = 50

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
RequestText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500, pattern=NONBLANK),
    AfterValidator(str.strip),
]
"""A request's free text: limits checked on the text as sent (as the schema says), then trimmed."""


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def casefold_key(value: str | None) -> str | None:
    """The case-insensitive comparison key stored beside company/title/location."""
    return normalize_tag(value) if value is not None else None


class ProspectIn(BaseModel):
    """One prospect as imported: strings trimmed, domain and email lower-cased, tags normalised."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Text
    title: Text | None = None
    company: Text | None = None
    domain: Text | None = None
    linkedin_url: Text | None = None
    email: Text | None = None
    location: Text | None = None
    tags: tuple[str, ...] = Field(min_length=1, max_length=MAX_TAGS)

    @field_validator(
        "title", "company", "domain", "linkedin_url", "email", "location", mode="before"
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = split_tags(value)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("tags must be a list of strings or a ;-separated string")
        return normalize_tags(value)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        domain = value.lower().rstrip(".")
        if "." not in domain or " " in domain or "@" in domain:
            raise ValueError("domain must look like example.com")
        return domain

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            checked = validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"email is not valid: {exc}") from None
        return checked.normalized.lower()

    @field_validator("linkedin_url")
    @classmethod
    def _linkedin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")) or "linkedin.com/" not in value.lower():
            raise ValueError("linkedin_url must be an http(s) linkedin.com URL")
        return value

    def with_domain(self) -> ProspectIn:
        """Fill ``domain`` from the email when only the email is known."""
        if self.domain is None and self.email is not None:
            return self.model_copy(update={"domain": self.email.rpartition("@")[2]})
        return self


class SearchFilters(BaseModel):
    """Optional narrowing: exact company/domain (case-insensitive), substring title/location."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    company: RequestText | None = None
    domain: RequestText | None = None
    title: RequestText | None = Field(default=None, description="Case-insensitive substring.")
    location: RequestText | None = Field(default=None, description="Case-insensitive substring.")


class SearchRequest(BaseModel):
    """Tags to match (ranked by IDF-weighted Jaccard overlap), optional filters, a page."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tags: list[Annotated[str, StringConstraints(max_length=MAX_TAG_LENGTH)]] = Field(
        min_length=1,
        max_length=MAX_TAGS,
        json_schema_extra={"contains": {"pattern": NONBLANK}},
        description="At least one tag with a character that is not white space.",
    )
    limit: JsonInt = Field(default=10, ge=1, le=MAX_LIMIT)
    offset: JsonInt = Field(default=0, ge=0, le=100_000)
    filters: SearchFilters | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if not any(VISIBLE.search(tag) for tag in value):
            raise ValueError("at least one non-empty tag is required")
        # NFKC can lengthen a tag past MAX_TAG_LENGTH; such a tag matches nothing, no error.
        return list(dict.fromkeys(t for t in map(normalize_tag, value) if t))


class ProspectOut(BaseModel):
    """A matching prospect with its score (0-1, higher is closer) and the tags it shares."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    title: str | None
    company: str | None
    domain: str | None
    linkedin_url: str | None
    email: str | None
    location: str | None
    tags: list[str]
    score: float
    matched_tags: list[str]


class SearchResponse(BaseModel):
    """One page of results, best first; ties are broken by ascending id."""

    model_config = ConfigDict(frozen=True)

    data: list[ProspectOut]
    total: int
    limit: int
    offset: int
    has_more: bool
