"""The campaigns group: create (a draft), get, list, update (frozen fields refused after launch,
optimistic ``version``), delete (never while active), and the lifecycle: launch checks, launch,
launch warnings, pause, resume, cancel."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.campaigns import preflight as pf
from server.campaigns import rules
from server.campaigns.lead_source import Collected
from server.campaigns.lead_store import MAX_LEADS
from server.campaigns.preflight_facts import gather
from server.campaigns.store import (
    MAX_CAMPAIGNS,
    CampaignLimitReached,
    CampaignRecord,
    CampaignStore,
    NewStep,
    Refused,
    StaleVersion,
)
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import paged_request
from server.jsontypes import nul_free
from server.resources import campaign_models as m
from server.resources._common import json_response, list_response, path_id
from server.resources.campaign_sources import add_collected, collect_dataset

__all__ = [
    "cancel",
    "create",
    "delete",
    "get",
    "launch",
    "launch_preflight",
    "launch_warnings",
    "list_campaigns",
    "owned",
    "pause",
    "resume",
    "update",
]


def _store(ctx: KeyedContext) -> CampaignStore:
    return CampaignStore(ctx.services.db.engine)


async def owned(request: Request, ctx: KeyedContext) -> CampaignRecord:
    """The caller's campaign named in the path (another user's, or none, is a 404)."""
    campaign_id = path_id(request, "campaign_id", "cmp", "campaign")
    campaign = await _store(ctx).get(ctx.user_id, campaign_id)
    if campaign is None:
        raise NotFound("campaign_not_found", f"No campaign {campaign_id!r}.")
    return campaign


def _steps(steps: list[m.Step]) -> list[NewStep]:
    """Stored steps; a label used twice in one step is refused (stats count per label)."""
    out = []
    for i, step in enumerate(steps):
        labels = [v.label for v in step.variants]
        if len(set(labels)) != len(labels):
            raise InvalidRequest(
                "duplicate_variant_label",
                f"Invalid steps.{i}: each variant of a step needs its own label.",
                param=f"steps.{i}.variants",
            )
        out.append(
            NewStep(step.delay_seconds, [v.model_dump(exclude_none=True) for v in step.variants])
        )
    return out


def _refused(campaign_id: str, state: str, action: str) -> Conflict:
    return Conflict(
        "campaign_state", f"Campaign {campaign_id!r} is {state}: it cannot {action} now."
    )


async def create(request: Request, ctx: KeyedContext) -> Response:
    """Create a draft campaign (with the leads of ``dataset_id`` if given)."""
    body = await read_json(request, m.CreateCampaign)
    steps = _steps(body.steps)
    collected: Collected | None = None
    if body.dataset_id is not None:  # read first: a bad dataset creates nothing
        collected = await collect_dataset(ctx, body.dataset_id, body.email_column)
        if len(collected.leads) > MAX_LEADS:
            raise Conflict("too_many_leads", f"A campaign holds at most {MAX_LEADS} leads.")
    values = body.model_dump(exclude={"steps", "name"})
    values["name"] = body.name.strip()
    values["sender_alias_ids"] = list(dict.fromkeys(body.sender_alias_ids))
    try:
        campaign = await _store(ctx).create(ctx.user_id, values, steps)
    except CampaignLimitReached:
        raise Conflict(
            "too_many_campaigns", f"At most {MAX_CAMPAIGNS} campaigns; delete one first."
        ) from None
    if collected is not None:
        await add_collected(ctx, campaign.id, collected)
        campaign = await owned_by_id(ctx, campaign.id)
    return json_response(m.CampaignView.of(campaign), status_code=201)


async def owned_by_id(ctx: KeyedContext, campaign_id: str) -> CampaignRecord:
    """The caller's campaign by id (deleted meanwhile: a 404)."""
    campaign = await _store(ctx).get(ctx.user_id, campaign_id)
    if campaign is None:
        raise NotFound("campaign_not_found", f"No campaign {campaign_id!r}.")
    return campaign


async def get(request: Request, ctx: KeyedContext) -> Response:
    """One of the caller's campaigns with its steps and lead counts."""
    return json_response(m.CampaignView.of(await owned(request, ctx)))


_STATUSES = frozenset(rules.STATES)


async def list_campaigns(request: Request, ctx: KeyedContext) -> Response:
    """The caller's campaigns, newest first: ``status`` (or the seed's ``status_filter``),
    ``search`` (part of the name); ``limit`` with ``offset`` or ``cursor``, or ``page`` and
    ``page_size``."""
    query = request.query_params
    page = paged_request(query)
    status = query.get("status") or query.get("status_filter")
    if status is not None and status not in _STATUSES:
        raise InvalidRequest(
            "parameter_invalid",
            f"Invalid status: one of {', '.join(rules.STATES)}.",
            param="status",
        )
    search = query.get("search")
    search = nul_free(search) if search is not None else None
    if search is not None and len(search) > 200:
        raise InvalidRequest("parameter_invalid", "Invalid search: at most 200 characters.")
    rows = await _store(ctx).list(
        ctx.user_id,
        status=status,
        search=search,
        limit=page.limit + 1,
        offset=page.offset,
        after=page.after,
    )
    return list_response(rows, page, m.CampaignView.of, lambda c: c.id)


async def update(request: Request, ctx: KeyedContext) -> Response:
    """Change the given fields; fields frozen in the campaign's state are refused (409, each
    named), and so is a stale ``version``."""
    campaign = await owned(request, ctx)
    body = await read_json(request, m.UpdateCampaign)
    given = set(body.model_fields_set) - {"version"}
    frozen = rules.frozen_fields(campaign.status, given)  # type: ignore[arg-type]
    if frozen:
        raise Conflict(
            "fields_frozen",
            f"Campaign {campaign.id!r} is {campaign.status}: "
            f"{', '.join(frozen)} can no longer change.",
            param=frozen[0],
        )
    version = body.version if body.version is not None else campaign.version
    if version != campaign.version:
        raise _stale(campaign.id, campaign.version)
    steps = _steps(body.steps) if body.steps is not None else None
    values: dict[str, Any] = {k: v for k, v in body.model_dump(include=given - {"steps"}).items()}
    if "name" in values:
        values["name"] = values["name"].strip()
    if "sender_alias_ids" in values:
        values["sender_alias_ids"] = list(dict.fromkeys(values["sender_alias_ids"]))
        if campaign.status != "draft":  # no launch check runs any more: check them now
            await _own_aliases(ctx, values["sender_alias_ids"])
    collected: Collected | None = None
    if body.dataset_id is not None:
        collected = await collect_dataset(ctx, body.dataset_id, body.email_column)
    allowed = frozenset(s for s in rules.STATES if not rules.frozen_fields(s, given))
    try:
        updated = await _store(ctx).update(
            ctx.user_id,
            campaign.id,
            version=version,
            values=values,
            steps=steps,
            allowed_in=allowed,
        )
    except StaleVersion as exc:
        raise _stale(campaign.id, exc.current) from None
    if updated is None:
        raise NotFound("campaign_not_found", f"No campaign {campaign.id!r}.")
    if collected is not None:
        await add_collected(ctx, campaign.id, collected)
        updated = await owned_by_id(ctx, campaign.id)
    return json_response(m.CampaignView.of(updated))


async def _own_aliases(ctx: KeyedContext, alias_ids: list[str]) -> None:
    """Each id is one of the caller's sending aliases (another user's or none: a 404 naming
    it), so a launched campaign never names an alias it could not send from."""
    for index, alias_id in enumerate(alias_ids):  # at most MAX_ALIASES
        if await ctx.services.mail.alias(ctx.user_id, alias_id) is None:
            raise NotFound(
                "alias_not_found",
                f"No sending alias {alias_id!r}.",
                param=f"sender_alias_ids.{index}",
            )


def _stale(campaign_id: str, current: int) -> Conflict:
    return Conflict(
        "version_conflict",
        f"Campaign {campaign_id!r} changed meanwhile (now version {current}); read it again.",
        param="version",
    )


async def delete(request: Request, ctx: KeyedContext) -> Response:
    """Delete a campaign with its steps, leads, drafts and events (204); refused while it is
    active (pause it first)."""
    campaign = await owned(request, ctx)
    try:
        done = await _store(ctx).delete(ctx.user_id, campaign.id)
    except Refused as exc:
        raise Conflict(
            "campaign_active",
            f"Campaign {campaign.id!r} is {exc.state}: pause or cancel it before deleting it.",
        ) from None
    if done is None:
        raise NotFound("campaign_not_found", f"No campaign {campaign.id!r}.")
    return Response(status_code=204)


async def _findings(ctx: KeyedContext, campaign: CampaignRecord) -> tuple[list[pf.Finding], int]:
    facts = await gather(ctx.services, ctx.user_id, campaign)
    return pf.check(facts), facts.open_leads


async def launch_preflight(request: Request, ctx: KeyedContext) -> Response:
    """What launching would find, changing nothing: blocking findings and warnings, with the
    leads concerned."""
    campaign = await owned(request, ctx)
    findings, leads = await _findings(ctx, campaign)
    blocking = pf.blocking(findings)
    return json_response(
        m.Preflight(
            campaign_id=campaign.id,
            ready=not blocking,
            blocking=len(blocking),
            warnings=len(findings) - len(blocking),
            findings=[m.FindingView.of(f) for f in findings],
            leads_to_start=leads if campaign.status == "draft" else 0,
        )
    )


async def launch(request: Request, ctx: KeyedContext) -> Response:
    """Launch a draft: refused (409, the blocking findings in ``error.detail``) while a check
    blocks; otherwise the campaign becomes active and its pending leads are due now."""
    campaign = await owned(request, ctx)
    if campaign.status != "draft":
        raise _refused(campaign.id, campaign.status, "launch")
    findings, _ = await _findings(ctx, campaign)
    blocking = pf.blocking(findings)
    if blocking:
        raise Conflict(
            "launch_blocked",
            f"Campaign {campaign.id!r} cannot launch: "
            f"{', '.join(f.code for f in blocking)} (see detail).",
            detail=[m.FindingView.of(f).model_dump(mode="json") for f in blocking],
        )
    try:
        done = await _store(ctx).transition(
            ctx.user_id, campaign.id, "launch", version=campaign.version
        )
    except Refused as exc:
        raise _refused(campaign.id, exc.state, "launch") from None
    except StaleVersion as exc:  # changed after the checks ran: they no longer hold
        raise _stale(campaign.id, exc.current) from None
    if done is None:
        raise NotFound("campaign_not_found", f"No campaign {campaign.id!r}.")
    launched, _ = done
    return json_response(
        m.LaunchResult(
            campaign=m.CampaignView.of(launched),
            warnings=[m.FindingView.of(f) for f in findings],
            leads_started=launched.lead_counts.get("active", 0),
        )
    )


async def launch_warnings(request: Request, ctx: KeyedContext) -> Response:
    """The warnings (non-blocking findings) about the campaign as it stands now."""
    campaign = await owned(request, ctx)
    findings, _ = await _findings(ctx, campaign)
    warnings = [f for f in findings if f.severity != "blocking"]
    return json_response(
        m.LaunchWarnings(campaign_id=campaign.id, warnings=[m.FindingView.of(f) for f in warnings])
    )


async def _act(request: Request, ctx: KeyedContext, action: rules.Action, verb: str) -> Response:
    campaign = await owned(request, ctx)
    try:
        done = await _store(ctx).transition(ctx.user_id, campaign.id, action)
    except Refused as exc:
        raise _refused(campaign.id, exc.state, verb) from None
    if done is None:
        raise NotFound("campaign_not_found", f"No campaign {campaign.id!r}.")
    return json_response(m.CampaignView.of(done[0]))


async def pause(request: Request, ctx: KeyedContext) -> Response:
    """Pause an active campaign (a paused one stays paused): nothing more is sent until it is
    resumed; the leads keep their place."""
    return await _act(request, ctx, "pause", "pause")


async def resume(request: Request, ctx: KeyedContext) -> Response:
    """Resume a paused campaign (an active one stays active)."""
    return await _act(request, ctx, "resume", "resume")


async def cancel(request: Request, ctx: KeyedContext) -> Response:
    """Cancel a campaign for good: nothing more is sent (its history stays)."""
    return await _act(request, ctx, "cancel", "cancel")
