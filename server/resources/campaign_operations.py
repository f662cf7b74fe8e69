"""The campaigns group's catalog entries (scope ``campaigns``): the seed's paths, trailing slash
on create and list included, plus adding and removing leads and cancelling."""

from __future__ import annotations

from pydantic import BaseModel

from server.campaigns.rules import STATES
from server.errors import ErrorEnvelope
from server.resources import campaign_leads as cl
from server.resources import campaign_models as m
from server.resources import campaigns as c
from server.routes import Operation, QueryParam, keyed_group

__all__ = ["CAMPAIGN_ID", "operations"]

V1 = "/api/v1"
BASE = f"{V1}/campaigns"
_CROCKFORD = "[0-9A-HJKMNP-TV-Z]{26}"
CAMPAIGN_ID = QueryParam(
    "campaign_id", {"type": "string", "pattern": rf"^cmp_{_CROCKFORD}$"}, "A campaign id."
)
_LEAD_ID = QueryParam(
    "campaign_lead_id", {"type": "string", "pattern": rf"^cld_{_CROCKFORD}$"}, "A lead id."
)
_PAGING = (
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Rows per page (20)."),
    QueryParam("offset", {"type": "integer", "minimum": 0, "maximum": 100000}, "Rows to skip."),
    QueryParam("cursor", {"type": "string", "maxLength": 200}, "next_cursor of the last page."),
    QueryParam("page", {"type": "integer", "minimum": 1, "maximum": 1001}, "Page (1-based)."),
    QueryParam("page_size", {"type": "integer", "minimum": 1, "maximum": 100}, "Rows per page."),
)
_CAMPAIGN_STATUS = {"type": "string", "enum": list(STATES)}
_LEAD_STATUS = {"type": "string", "enum": list(cl.LEAD_STATUSES)}
_404: dict[int, type[BaseModel]] = {404: ErrorEnvelope}
_404_409: dict[int, type[BaseModel]] = {404: ErrorEnvelope, 409: ErrorEnvelope}
_404_409_413: dict[int, type[BaseModel]] = {**_404_409, 413: ErrorEnvelope}


def operations() -> tuple[Operation, ...]:
    """Every campaigns route."""
    op = keyed_group("campaigns", "campaigns")
    one = (CAMPAIGN_ID,)
    lead = (CAMPAIGN_ID, _LEAD_ID)
    item = f"{BASE}/{{campaign_id}}"
    return (
        op(
            "POST",
            f"{BASE}/",
            c.create,
            "campaigns_create",
            "Create a draft campaign",
            m.CampaignView,
            m.CreateCampaign,
            status_code=201,
            responses={404: ErrorEnvelope, 409: ErrorEnvelope, 413: ErrorEnvelope},
        ),
        op(
            "GET",
            f"{BASE}/",
            c.list_campaigns,
            "campaigns_list",
            "List campaigns, newest first",
            m.CampaignList,
            query=(
                *_PAGING,
                QueryParam("status", _CAMPAIGN_STATUS, "Only campaigns in this state."),
                QueryParam("status_filter", _CAMPAIGN_STATUS, "The seed's name of status."),
                QueryParam(
                    "search", {"type": "string", "maxLength": 200}, "Part of the name, any case."
                ),
            ),
        ),
        op(
            "GET",
            item,
            c.get,
            "campaigns_get",
            "Get a campaign",
            m.CampaignView,
            responses=_404,
            path_params=one,
        ),
        op(
            "PATCH",
            item,
            c.update,
            "campaigns_update",
            "Update a campaign (frozen fields refused after launch)",
            m.CampaignView,
            m.UpdateCampaign,
            responses=_404_409_413,
            path_params=one,
        ),
        op(
            "DELETE",
            item,
            c.delete,
            "campaigns_delete",
            "Delete a campaign and all of it (refused while active)",
            m.CampaignView,
            status_code=204,
            responses=_404_409,
            path_params=one,
        ),
        op(
            "POST",
            f"{item}/launch-preflight",
            c.launch_preflight,
            "campaigns_launch_preflight",
            "Check launch readiness (no side effects)",
            m.Preflight,
            responses=_404,
            path_params=one,
        ),
        op(
            "POST",
            f"{item}/launch",
            c.launch,
            "campaigns_launch",
            "Launch a campaign (refused with the blocking findings)",
            m.LaunchResult,
            responses=_404_409,
            path_params=one,
        ),
        op(
            "GET",
            f"{item}/launch-warnings",
            c.launch_warnings,
            "campaigns_launch_warnings",
            "The campaign's non-blocking findings",
            m.LaunchWarnings,
            responses=_404,
            path_params=one,
        ),
        op(
            "POST",
            f"{item}/pause",
            c.pause,
            "campaigns_pause",
            "Pause a campaign",
            m.CampaignView,
            responses=_404_409,
            path_params=one,
        ),
        op(
            "POST",
            f"{item}/resume",
            c.resume,
            "campaigns_resume",
            "Resume a paused campaign",
            m.CampaignView,
            responses=_404_409,
            path_params=one,
        ),
        op(
            "POST",
            f"{item}/cancel",
            c.cancel,
            "campaigns_cancel",
            "Cancel a campaign for good",
            m.CampaignView,
            responses=_404_409,
            path_params=one,
        ),
        op(
            "GET",
            f"{item}/leads",
            cl.list_leads,
            "campaigns_leads_list",
            "List a campaign's leads",
            m.LeadList,
            query=(
                *_PAGING,
                QueryParam("status", _LEAD_STATUS, "Only leads in this state."),
                QueryParam("status_filter", _LEAD_STATUS, "The seed's name of status."),
            ),
            responses=_404,
            path_params=one,
        ),
        op(
            "POST",
            f"{item}/leads",
            cl.add_leads,
            "campaigns_leads_add",
            "Add leads (inline and/or from a dataset)",
            m.AddedLeads,
            m.AddLeads,
            status_code=201,
            responses={200: m.AddedLeads, **_404_409_413},
            path_params=one,
        ),
        op(
            "GET",
            f"{item}/playground/drafts",
            cl.drafts,
            "campaigns_playground_drafts",
            "Drafts awaiting approval",
            m.DraftList,
            query=(
                *_PAGING,
                QueryParam(
                    "state",
                    {"type": "string", "enum": list(cl.DRAFT_STATES)},
                    "draft (default), approved or all.",
                ),
            ),
            responses=_404,
            path_params=one,
        ),
        op(
            "DELETE",
            f"{item}/leads/{{campaign_lead_id}}",
            cl.remove,
            "campaigns_lead_remove",
            "Remove a lead: no further steps (sent ones stay sent)",
            m.CampaignView,
            status_code=204,
            responses=_404_409,
            path_params=lead,
        ),
        op(
            "POST",
            f"{item}/leads/{{campaign_lead_id}}/approve",
            cl.approve,
            "campaigns_lead_approve",
            "Approve a lead's draft of a step",
            m.LeadApproval,
            m.Approve,
            responses=_404_409_413,
            path_params=lead,
        ),
        op(
            "POST",
            f"{item}/leads/{{campaign_lead_id}}/unapprove",
            cl.unapprove,
            "campaigns_lead_unapprove",
            "Take back a lead's approval before sending",
            m.LeadApproval,
            m.Unapprove,
            responses=_404_409_413,
            path_params=lead,
        ),
        op(
            "POST",
            f"{item}/leads/{{campaign_lead_id}}/reset",
            cl.reset,
            "campaigns_lead_reset",
            "Drop a lead's unsent drafts (rendered afresh)",
            m.LeadApproval,
            m.Reset,
            responses=_404_409_413,
            path_params=lead,
        ),
    )
