"""Request and response models of the campaigns group (their JSON Schemas are the OpenAPI
document's): steps with A/B variants, the sending schedule, leads, launch findings and drafts."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from server.campaigns.lead_store import DraftRecord, LeadRecord
from server.campaigns.preflight import Finding
from server.campaigns.store import CampaignRecord
from server.jsontypes import NONBLANK, NUL_FREE, never_null, not_null
from server.templates import render as tr

ZONES: tuple[str, ...] = tuple(sorted(zoneinfo.available_timezones()))
"""IANA time zones this host knows (the schema lists them)."""

MAX_STEPS = 20
MAX_VARIANTS = 10
MAX_ALIASES = 50
MAX_INLINE_LEADS = 1000
MAX_LEAD_KEYS = 200
CROCKFORD = "[0-9A-HJKMNP-TV-Z]{26}"


def _integral(value: object) -> object:
    """JSON Schema's integer: 10.0 counts as 10 (the bounds stay in the schema, placed before
    this validator)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_INTEGRAL = BeforeValidator(_integral)


def _zone(value: str) -> str:
    if value not in ZONES:
        raise ValueError("not an IANA time zone")
    zoneinfo.ZoneInfo(value)  # loads it: the zone must be usable, not only listed
    return value


def _unique(values: list[int]) -> list[int]:
    if len(set(values)) != len(values):
        raise ValueError("days must not repeat")
    return values


Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NONBLANK), NUL_FREE]
Subject = Annotated[str, StringConstraints(max_length=1000), NUL_FREE]
Body = Annotated[str, StringConstraints(max_length=tr.MAX_TEMPLATE_CHARS), NUL_FREE]
Label = Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")]
TemplateId = Annotated[str, StringConstraints(pattern=rf"^tpl_{CROCKFORD}$")]
AliasId = Annotated[str, StringConstraints(pattern=rf"^alias_{CROCKFORD}$")]
DatasetId = Annotated[str, StringConstraints(pattern=rf"^ds_{CROCKFORD}$")]
Column = Annotated[str, StringConstraints(min_length=1, max_length=200), NUL_FREE]
HHMM = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Timezone = Annotated[
    str,
    AfterValidator(_zone),
    WithJsonSchema({"type": "string", "enum": list(ZONES), "description": "An IANA time zone."}),
]
Day = Annotated[int, Field(ge=0, le=6), _INTEGRAL]
Days = Annotated[
    list[Day],
    Field(max_length=7, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_unique),
]
Cap = Annotated[int, Field(ge=1, le=100_000), _INTEGRAL]


class Variant(BaseModel):
    """One version of a step's email: a stored template, or inline ``subject`` with ``text``
    and/or ``html`` (``{{variables}}`` allowed). ``weight`` sets its share of the leads."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: Label = "A"
    weight: Annotated[int, Field(ge=1, le=1000), _INTEGRAL] = 1
    template_id: TemplateId | None = None
    subject: Subject | None = None
    text: Body | None = None
    html: Body | None = None


class Step(BaseModel):
    """A step: sent ``delay_seconds`` after the previous one (the first: after launch)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    delay_seconds: Annotated[int, Field(ge=0, le=366 * 86400), _INTEGRAL] = 0
    variants: list[Variant] = Field(min_length=1, max_length=MAX_VARIANTS)


class Schedule(BaseModel):
    """When sends may go: weekdays (0 = Monday) and hours in ``timezone`` (an ``end`` before
    ``start`` spans midnight), a minimum gap between sends of one mailbox and random jitter."""

    model_config = ConfigDict(extra="forbid", strict=True)

    timezone: Timezone = "UTC"
    days: Days = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    start: HHMM = "09:00"
    end: HHMM = "17:00"
    min_gap_seconds: Annotated[int, Field(ge=0, le=86_400), _INTEGRAL] = 0
    jitter_seconds: Annotated[int, Field(ge=0, le=3_600), _INTEGRAL] = 0


class CreateCampaign(BaseModel):
    """A new campaign (a draft until launched). ``dataset_id`` imports that dataset's rows as
    leads (their address from ``email_column``, else the dataset's mapped email column)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)
    sender_alias_ids: list[AliasId] = Field(default_factory=list, max_length=MAX_ALIASES)
    schedule: Schedule = Field(default_factory=Schedule)
    daily_cap: Cap | None = None
    alias_daily_cap: Cap | None = None
    requires_approval: bool = False
    stop_on_reply: bool = True
    track_opens: bool = False
    track_clicks: bool = False
    dataset_id: DatasetId | None = None
    email_column: Column | None = None


_NEVER_NULL = (
    "name",
    "steps",
    "sender_alias_ids",
    "schedule",
    "requires_approval",
    "stop_on_reply",
    "track_opens",
    "track_clicks",
    "version",
)


class UpdateCampaign(BaseModel):
    """Fields to change (omitted ones stay; ``steps`` replaces every step). ``version``, when
    given, must be the campaign's current one (else 409). After launch, the steps, the lead
    source and the approval gate are frozen; after the end, all but the name."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=never_null(*_NEVER_NULL)
    )

    name: Name | None = None
    steps: list[Step] | None = Field(default=None, max_length=MAX_STEPS)
    sender_alias_ids: list[AliasId] | None = Field(default=None, max_length=MAX_ALIASES)
    schedule: Schedule | None = None
    daily_cap: Cap | None = None
    alias_daily_cap: Cap | None = None
    requires_approval: bool | None = None
    stop_on_reply: bool | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None
    dataset_id: DatasetId | None = None
    email_column: Column | None = None
    version: Annotated[int, Field(ge=1, le=2**31 - 1), _INTEGRAL] | None = None

    _present = field_validator(*_NEVER_NULL, mode="before")(not_null)


class Hold(BaseModel):
    """A system hold (set and lifted by the sequencer): why, and since when."""

    code: str
    detail: Any = None
    since: float | None = None


class StepView(BaseModel):
    """A stored step."""

    id: str
    position: int
    delay_seconds: int
    variants: list[Variant]


class CampaignView(BaseModel):
    """A campaign: ``status`` is the user's state; ``holds`` the system's; it sends only when
    ``sending`` (active and no hold)."""

    id: str
    object: str = "campaign"
    name: str
    status: str
    sending: bool
    holds: list[Hold]
    steps: list[StepView]
    sender_alias_ids: list[str]
    schedule: Schedule
    daily_cap: int | None
    alias_daily_cap: int | None
    requires_approval: bool
    stop_on_reply: bool
    track_opens: bool
    track_clicks: bool
    dataset_id: str | None
    email_column: str | None
    version: int
    total_leads: int
    lead_counts: dict[str, int]
    created: float
    updated: float
    launched_at: float | None
    finished_at: float | None

    @classmethod
    def of(cls, c: CampaignRecord) -> CampaignView:
        """From a stored campaign."""
        return cls(
            id=c.id,
            name=c.name,
            status=c.status,
            sending=c.status == "active" and not c.holds,
            holds=[Hold.model_validate(h) for h in c.holds],
            steps=[
                StepView(
                    id=s.id,
                    position=s.position,
                    delay_seconds=s.delay_seconds,
                    variants=[Variant.model_validate(v, strict=False) for v in s.variants],
                )
                for s in c.steps
            ],
            sender_alias_ids=list(c.sender_alias_ids),
            schedule=Schedule.model_validate(c.schedule, strict=False),
            daily_cap=c.daily_cap,
            alias_daily_cap=c.alias_daily_cap,
            requires_approval=c.requires_approval,
            stop_on_reply=c.stop_on_reply,
            track_opens=c.track_opens,
            track_clicks=c.track_clicks,
            dataset_id=c.dataset_id,
            email_column=c.email_column,
            version=c.version,
            total_leads=sum(c.lead_counts.values()),
            lead_counts=dict(c.lead_counts),
            created=c.created_at,
            updated=c.updated_at,
            launched_at=c.launched_at,
            finished_at=c.finished_at,
        )


class CampaignList(BaseModel):
    """A page of the user's campaigns, newest first."""

    data: list[CampaignView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


LeadKey = Annotated[str, StringConstraints(min_length=1, max_length=200), NUL_FREE]
LeadValue = (
    Annotated[str, StringConstraints(max_length=10_000), NUL_FREE]
    | Annotated[int, Field(ge=-(2**53), le=2**53)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)
"""A lead variable: no NUL (PostgreSQL's JSON refuses it), numbers JSON can carry exactly."""


class NewLeadIn(BaseModel):
    """A lead given inline: its address and the variables its emails use."""

    model_config = ConfigDict(extra="forbid", strict=True)

    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    data: dict[LeadKey, LeadValue] = Field(default_factory=dict, max_length=MAX_LEAD_KEYS)


class AddLeads(BaseModel):
    """Leads to add: inline ``leads``, and/or every row of a dataset of yours (its address from
    ``email_column``, else the dataset's mapped email column). Addresses already in the campaign
    are skipped; so are invalid ones (counted)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    leads: list[NewLeadIn] = Field(default_factory=list, max_length=MAX_INLINE_LEADS)
    dataset_id: DatasetId | None = None
    email_column: Column | None = None


class AddedLeads(BaseModel):
    """What adding did."""

    added: int
    duplicates: int
    invalid: int
    invalid_examples: list[str]
    total_leads: int


class LeadView(BaseModel):
    """A campaign lead and where it stands in the sequence."""

    id: str
    object: str = "campaign_lead"
    campaign_id: str
    email: str
    data: dict[str, Any]
    row_index: int | None
    status: str
    stop_reason: str | None
    next_step_index: int
    due_at: float | None
    alias_id: str | None
    last_sent_at: float | None
    created: float
    updated: float

    @classmethod
    def of(cls, lead: LeadRecord) -> LeadView:
        """From a stored lead."""
        return cls(
            id=lead.id,
            campaign_id=lead.campaign_id,
            email=lead.email,
            data=dict(lead.data or {}),
            row_index=lead.row_index,
            status=lead.status,
            stop_reason=lead.stop_reason,
            next_step_index=lead.next_position,
            due_at=lead.due_at,
            alias_id=lead.alias_id,
            last_sent_at=lead.last_sent_at,
            created=lead.created_at,
            updated=lead.updated_at,
        )


class LeadList(BaseModel):
    """A page of a campaign's leads, newest first."""

    data: list[LeadView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


class LeadDetailView(BaseModel):
    """A lead a finding concerns."""

    lead_id: str
    email: str
    detail: str


class FindingView(BaseModel):
    """A launch check's finding: ``blocking`` ones refuse the launch."""

    code: str
    severity: str
    message: str
    count: int
    leads: list[LeadDetailView]

    @classmethod
    def of(cls, f: Finding) -> FindingView:
        """From a finding."""
        return cls(
            code=f.code,
            severity=f.severity,
            message=f.message,
            count=f.count,
            leads=[LeadDetailView(**vars(d)) for d in f.leads],
        )


class Preflight(BaseModel):
    """Launch readiness (nothing changed): ``ready`` when no finding blocks."""

    campaign_id: str
    ready: bool
    blocking: int
    warnings: int
    findings: list[FindingView]
    leads_to_start: int


class LaunchResult(BaseModel):
    """The launched campaign, the warnings it launched with and how many leads started."""

    campaign: CampaignView
    warnings: list[FindingView]
    leads_started: int


class LaunchWarnings(BaseModel):
    """The non-blocking findings about the campaign as it stands."""

    campaign_id: str
    warnings: list[FindingView]


class DraftView(BaseModel):
    """A lead's rendered email for one step: ``draft`` awaits approval, ``approved`` may go."""

    lead_id: str
    email: str
    step_index: int
    variant: str
    subject: str
    text: str | None
    html: str | None
    state: str
    approved_at: float | None
    created: float
    updated: float

    @classmethod
    def of(cls, d: DraftRecord) -> DraftView:
        """From a stored draft."""
        return cls(
            lead_id=d.lead_id,
            email=d.email,
            step_index=d.position,
            variant=d.variant,
            subject=d.subject,
            text=d.text,
            html=d.html,
            state=d.state,
            approved_at=d.approved_at,
            created=d.created_at,
            updated=d.updated_at,
        )


class DraftList(BaseModel):
    """A page of a campaign's drafts, by lead (newest lead first)."""

    data: list[DraftView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


StepIndex = Annotated[int, Field(ge=0, le=MAX_STEPS - 1), _INTEGRAL]


class Approve(BaseModel):
    """Approve a lead's draft of one step (default: its next step), optionally edited first."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=never_null("subject", "step_index")
    )

    step_index: StepIndex | None = None
    subject: Subject | None = None
    text: Body | None = None
    html: Body | None = None

    _present = field_validator("subject", "step_index", mode="before")(not_null)


class Unapprove(BaseModel):
    """Take back the approval of a lead's step (default: its next step) before it is sent."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=never_null("step_index")
    )

    step_index: StepIndex | None = None

    _present = field_validator("step_index", mode="before")(not_null)


class Reset(BaseModel):
    """Drop a lead's unsent drafts of these steps (omitted: every step) to have them rendered
    afresh."""

    model_config = ConfigDict(extra="forbid", strict=True)

    step_indices: list[StepIndex] | None = Field(default=None, max_length=MAX_STEPS)


class LeadApproval(BaseModel):
    """The lead after an approval move, with its drafts."""

    lead: LeadView
    drafts: list[DraftView]
