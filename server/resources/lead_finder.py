"""The lead-finder group: names to LinkedIn profile URLs as one job, 3 credits per name reserved
and captured per name answered."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.http.keyed import KeyedContext
from server.resources import jobs
from server.usecases.linkedin import LinkedInRequest

__all__ = ["BatchRequest", "batch", "batch_status"]

BATCH_STATUS = "/api/v1/lead-finder/batch/{job_id}/status"


class BatchRequest(BaseModel):
    """People to find (at most 1,000): name and company, optionally title and location."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    names: list[LinkedInRequest] = Field(min_length=1, max_length=1000)


async def batch(request: Request, ctx: KeyedContext) -> Response:
    """Queue a batch; the job id is the ``session_id`` of the status route."""
    body = await read_json(request, BatchRequest)
    items = [person.model_dump(mode="json") for person in body.names]
    return await jobs.enqueue_charged(
        ctx, "leads.batch", {}, units=len(items), items=items, status_url=BATCH_STATUS
    )


async def batch_status(request: Request, ctx: KeyedContext) -> Response:
    """Progress of a batch and each name's ranked profiles."""
    job = await jobs.job_of(ctx, str(request.path_params["session_id"]), ("leads.batch",))
    return await jobs.rows_response(ctx, request, job)
