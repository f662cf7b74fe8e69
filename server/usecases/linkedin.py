"""LinkedIn profile URLs for a person at a company, ranked by emailintel's search finder."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from emailintel.errors import EmailIntelError, PersonNameError, SearchQueryError
from emailintel.search.models import LinkedInResult
from server.api.upstream import library_error
from server.jsontypes import NONBLANK, JsonInt
from server.services import Services

__all__ = ["LinkedInRequest", "LinkedInResponse", "find_linkedin_url"]


class LinkedInRequest(BaseModel):
    """The person to look for: name and company, optionally title and location."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=200, pattern=NONBLANK)
    company: str = Field(min_length=1, max_length=200, pattern=NONBLANK)
    title: str | None = Field(default=None, max_length=200)
    location: str | None = Field(default=None, max_length=200)
    limit: JsonInt = Field(default=5, ge=1, le=10)


class LinkedInResponse(LinkedInResult):
    """Ranked profile candidates with a 0-1 score and the evidence behind each."""


def _nobody(body: LinkedInRequest) -> LinkedInResult | None:
    """An empty answer when the name or company is unusable (no searchable person), else None."""
    from emailintel.search.finder import MATCH_THRESHOLD
    from emailintel.search.scoring import make_target

    try:
        make_target(body.name, body.company, title=body.title, location=body.location)
    except (PersonNameError, SearchQueryError):
        return LinkedInResult(name=body.name, company=body.company, threshold=MATCH_THRESHOLD)
    return None


async def find_linkedin_url(svc: Services, body: LinkedInRequest) -> LinkedInResponse:
    """Search-engine results scored against the person; a name or company nobody can be
    searched by is answered with no candidates; backend failures are 5xx."""
    from emailintel.search.finder import find_linkedin

    result = _nobody(body)
    if result is None:
        try:
            result = await find_linkedin(
                body.name,
                body.company,
                title=body.title,
                location=body.location,
                engine=svc.search,
                limit=body.limit,
            )
        except EmailIntelError as exc:
            raise library_error(exc) from None
    return LinkedInResponse.model_validate(result.model_dump())
