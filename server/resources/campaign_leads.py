"""A campaign's leads and the playground: list and add leads, list drafts awaiting approval, and
approve, unapprove or reset a lead's drafts (the campaigns contract's approval moves)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.campaigns.lead_source import Collected, collect
from server.campaigns.lead_store import LeadRecord, LeadsClosed, LeadStore, NotApprovable
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import paged_request
from server.resources import campaign_models as m
from server.resources._common import json_response, list_response, path_id
from server.resources.campaign_sources import add_collected, collect_dataset, validator
from server.resources.campaigns import owned

__all__ = ["add_leads", "approve", "drafts", "list_leads", "reset", "unapprove"]

LEAD_STATUSES = ("pending", "active", "waiting_approval", "stopped", "completed", "failed")
DRAFT_STATES = ("draft", "approved", "all")


def _store(ctx: KeyedContext) -> LeadStore:
    return LeadStore(ctx.services.db.engine)


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise InvalidRequest(
            "parameter_invalid", f"Invalid {name}: one of {', '.join(allowed)}.", param=name
        )
    return value


async def list_leads(request: Request, ctx: KeyedContext) -> Response:
    """The campaign's leads, newest first, optionally of one ``status`` (or the seed's
    ``status_filter``); both paginations."""
    campaign = await owned(request, ctx)
    page = paged_request(request.query_params)
    status = _choice(request, "status", LEAD_STATUSES) or _choice(
        request, "status_filter", LEAD_STATUSES
    )
    rows = await _store(ctx).page(
        campaign.id, status=status, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(rows, page, m.LeadView.of, lambda lead: lead.id)


async def add_leads(request: Request, ctx: KeyedContext) -> Response:
    """Add inline leads and/or a dataset's rows; addresses already in the campaign are skipped,
    invalid ones counted and left out. In a launched campaign new leads start at once."""
    campaign = await owned(request, ctx)
    body = await read_json(request, m.AddLeads)
    collected = collect(
        validator(ctx), [(lead.email, lead.data, None) for lead in body.leads], Collected()
    )
    if body.dataset_id is not None:
        collected = await collect_dataset(ctx, body.dataset_id, body.email_column, collected)
    added = await add_collected(ctx, campaign.id, collected)
    return json_response(
        m.AddedLeads(
            added=added,
            duplicates=collected.duplicates + len(collected.leads) - added,
            invalid=collected.invalid,
            invalid_examples=collected.invalid_examples,
            total_leads=await _store(ctx).count(campaign.id),
        ),
        status_code=201 if added else 200,
    )


async def drafts(request: Request, ctx: KeyedContext) -> Response:
    """The campaign's drafts awaiting approval (``state``: draft by default, approved, or all),
    by lead, newest lead first; both paginations."""
    campaign = await owned(request, ctx)
    page = paged_request(request.query_params)
    state = _choice(request, "state", DRAFT_STATES) or "draft"
    rows = await _store(ctx).drafts(
        campaign.id,
        state=None if state == "all" else state,
        limit=page.limit + 1,
        offset=page.offset,
        after=page.after,
    )
    return list_response(rows, page, m.DraftView.of, lambda d: d.lead_id)


async def _lead(request: Request, ctx: KeyedContext) -> LeadRecord:
    campaign = await owned(request, ctx)
    lead_id = path_id(request, "campaign_lead_id", "cld", "campaign_lead")
    lead = await _store(ctx).get(campaign.id, lead_id)
    if lead is None:
        raise NotFound("campaign_lead_not_found", f"No campaign lead {lead_id!r}.")
    return lead


async def _answer(ctx: KeyedContext, lead: LeadRecord) -> Response:
    store = _store(ctx)
    now = await store.get(lead.campaign_id, lead.id)
    if now is None:  # deleted meanwhile
        raise NotFound("campaign_lead_not_found", f"No campaign lead {lead.id!r}.")
    found = await store.lead_drafts(lead.id)
    return json_response(
        m.LeadApproval(lead=m.LeadView.of(now), drafts=[m.DraftView.of(d) for d in found])
    )


def _conflict(exc: NotApprovable) -> Conflict:
    return Conflict(exc.code, exc.message, param="step_index")


async def approve(request: Request, ctx: KeyedContext) -> Response:
    """Approve the lead's draft of a step (its next one by default), with any edits to subject,
    text or html: the step may go now."""
    lead = await _lead(request, ctx)
    body = await read_json(request, m.Approve)
    if lead.status in ("stopped", "completed", "failed"):
        raise Conflict("lead_closed", f"Lead {lead.id!r} is {lead.status}: nothing to approve.")
    edits = body.model_dump(include={"subject", "text", "html"}, exclude_unset=True)
    position = lead.next_position if body.step_index is None else body.step_index
    try:
        await _store(ctx).approve(lead, position, edits)
    except NotApprovable as exc:
        raise _conflict(exc) from None
    return await _answer(ctx, lead)


async def unapprove(request: Request, ctx: KeyedContext) -> Response:
    """Take back the approval of a lead's step (its next one by default) before it is sent."""
    lead = await _lead(request, ctx)
    body = await read_json(request, m.Unapprove)
    position = lead.next_position if body.step_index is None else body.step_index
    try:
        await _store(ctx).unapprove(lead, position)
    except NotApprovable as exc:
        raise _conflict(exc) from None
    return await _answer(ctx, lead)


async def reset(request: Request, ctx: KeyedContext) -> Response:
    """Drop the lead's unsent drafts (of ``step_indices``, else all) so they are rendered
    afresh; a lead waiting for approval goes back to active."""
    lead = await _lead(request, ctx)
    body = await read_json(request, m.Reset)
    await _store(ctx).reset(lead, body.step_indices)
    return await _answer(ctx, lead)


async def remove(request: Request, ctx: KeyedContext) -> Response:
    """Take a lead out of a draft, active or paused campaign (204): it gets no further step; a
    step already sent stays sent (the lead is then kept, stopped ``removed``; one with nothing
    sent is deleted). 409 ``campaign_closed`` once the campaign has ended."""
    campaign = await owned(request, ctx)
    lead_id = path_id(request, "campaign_lead_id", "cld", "campaign_lead")
    try:
        done = await _store(ctx).remove(ctx.user_id, campaign.id, lead_id)
    except LookupError:
        raise NotFound("campaign_not_found", f"No campaign {campaign.id!r}.") from None
    except LeadsClosed:
        raise Conflict(
            "campaign_closed", f"Campaign {campaign.id!r} has ended: its leads stay as they are."
        ) from None
    if done is None:
        raise NotFound("campaign_lead_not_found", f"No campaign lead {lead_id!r}.")
    return Response(status_code=204)
