"""The templates group: email templates (subject, text body, optional HTML body with
``{{variables}}``), CRUD, a name search, and a preview that renders one against a lead row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from starlette.requests import Request
from starlette.responses import Response

from server.api.parsing import read_json
from server.datasets.store import DatasetStore
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext
from server.http.pagination import paged_request
from server.jsontypes import NONBLANK, NUL_FREE, never_null, not_null, nul_free
from server.resources._common import json_response, list_response, path_id
from server.templates import render as tr
from server.templates.store import (
    MAX_TEMPLATES,
    UNSET,
    Template,
    TemplateLimitReached,
    TemplateStore,
)

__all__ = [
    "CreateTemplate",
    "PreviewRequest",
    "TemplateList",
    "TemplatePreview",
    "TemplateView",
    "UpdateTemplate",
    "create",
    "delete",
    "get",
    "list_templates",
    "preview",
    "update",
]

MAX_SUBJECT = 1000
MAX_ROW_KEYS = 500
MAX_ROW_VALUE = 10_000

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NONBLANK), NUL_FREE]
Subject = Annotated[str, StringConstraints(max_length=MAX_SUBJECT), NUL_FREE]
Body = Annotated[str, StringConstraints(max_length=tr.MAX_TEMPLATE_CHARS), NUL_FREE]


class CreateTemplate(BaseModel):
    """A template: ``{{variable}}`` or ``{{variable|fallback}}`` anywhere in its parts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    subject: Subject = ""
    body_text: Body = Field(description="The plain-text body (values are not escaped).")
    body_html: Body | None = Field(
        default=None, description="An HTML body (values are HTML-escaped), or null."
    )


class UpdateTemplate(BaseModel):
    """Fields to change; omitted ones stay (``body_html: null`` removes the HTML body)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=never_null("name", "subject", "body_text")
    )

    name: Name | None = None
    subject: Subject | None = None
    body_text: Body | None = None
    body_html: Body | None = None

    _present = field_validator("name", "subject", "body_text", mode="before")(not_null)


class IssueView(BaseModel):
    """Text kept as written: an unclosed ``{{``, a stray ``}}``, tags past the limit."""

    part: str
    code: str
    offset: int
    excerpt: str


class TemplateView(BaseModel):
    """A template with the variables it uses and any issues in its text."""

    id: str
    object: str = "template"
    name: str
    subject: str
    body_text: str
    body_html: str | None
    variables: list[str]
    issues: list[IssueView]
    created: float
    updated: float

    @classmethod
    def of(cls, template: Template) -> TemplateView:
        """From a stored template."""
        names: dict[str, None] = {}
        issues: list[IssueView] = []
        for part, text in _parts(template.subject, template.body_text, template.body_html):
            tags, found = tr.scan(text)
            names.update(dict.fromkeys(tag.name for tag in tags))
            issues += [IssueView(part=part, **vars(issue)) for issue in found]
        return cls(
            id=template.id,
            name=template.name,
            subject=template.subject,
            body_text=template.body_text,
            body_html=template.body_html,
            variables=list(names),
            issues=issues,
            created=template.created_at,
            updated=template.updated_at,
        )


class TemplateList(BaseModel):
    """A page of the user's templates, newest first."""

    data: list[TemplateView]
    has_more: bool
    next_cursor: str | None
    limit: int
    offset: int


RowKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RowValue = Annotated[str, StringConstraints(max_length=MAX_ROW_VALUE)] | int | float | bool | None


class PreviewRequest(BaseModel):
    """The lead row to render with: inline (``row``: column -> value), or a stored one
    (``dataset_id`` and ``row_index``: its original columns, then the columns our jobs added)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    row: dict[RowKey, RowValue] | None = Field(default=None, max_length=MAX_ROW_KEYS)
    dataset_id: str | None = Field(
        default=None, pattern=r"^ds_[0-9A-HJKMNP-TV-Z]{26}$", description="A dataset of yours."
    )
    row_index: int | None = Field(default=None, ge=0, le=10_000_000)


class TemplatePreview(BaseModel):
    """The rendered parts; ``missing_variables`` have no value and no fallback (their tags stay
    in the text), and sending refuses such a row (``complete`` is false)."""

    template_id: str
    subject: str
    body_text: str
    body_html: str | None
    missing_variables: list[str]
    issues: list[IssueView]
    complete: bool


def _parts(subject: str, text: str, html: str | None) -> list[tuple[str, str]]:
    parts = [("subject", subject), ("body_text", text)]
    if html is not None:
        parts.append(("body_html", html))
    return parts


def _check_tags(subject: str | None, text: str | None, html: str | None) -> None:
    """Refuse a part with more variables than the renderer fills."""
    for part, value in (("subject", subject), ("body_text", text), ("body_html", html)):
        if value is not None and any(i.code == "too_many_tags" for i in tr.scan(value)[1]):
            raise InvalidRequest(
                "too_many_variables",
                f"Invalid {part}: at most {tr.MAX_TAGS} variables per part.",
                param=part,
            )


def _store(ctx: KeyedContext) -> TemplateStore:
    return TemplateStore(ctx.services.db.engine)


async def _owned(request: Request, ctx: KeyedContext) -> Template:
    template_id = path_id(request, "template_id", "tpl", "template")
    template = await _store(ctx).get(ctx.user_id, template_id)
    if template is None:
        raise NotFound("template_not_found", f"No template {template_id!r}.")
    return template


async def create(request: Request, ctx: KeyedContext) -> Response:
    """Create a template; its ``variables`` are filled from lead data at send time."""
    body = await read_json(request, CreateTemplate)
    _check_tags(body.subject, body.body_text, body.body_html)
    try:
        template = await _store(ctx).create(
            ctx.user_id,
            name=body.name.strip(),
            subject=body.subject,
            body_text=body.body_text,
            body_html=body.body_html,
        )
    except TemplateLimitReached:
        raise Conflict(
            "too_many_templates", f"At most {MAX_TEMPLATES} templates; delete one first."
        ) from None
    return json_response(TemplateView.of(template), status_code=201)


async def get(request: Request, ctx: KeyedContext) -> Response:
    """One of the caller's templates."""
    return json_response(TemplateView.of(await _owned(request, ctx)))


async def list_templates(request: Request, ctx: KeyedContext) -> Response:
    """The caller's templates, newest first: ``search`` (part of the name, any case);
    ``limit`` with ``offset`` or ``cursor``, or the seed's ``page`` and ``page_size``."""
    page = paged_request(request.query_params)
    search = request.query_params.get("search") or request.query_params.get("q")
    search = nul_free(search) if search is not None else None
    if search is not None and len(search) > 200:
        raise InvalidRequest("parameter_invalid", "Invalid search: at most 200 characters.")
    rows = await _store(ctx).list(
        ctx.user_id, search=search, limit=page.limit + 1, offset=page.offset, after=page.after
    )
    return list_response(rows, page, TemplateView.of, lambda t: t.id)


async def update(request: Request, ctx: KeyedContext) -> Response:
    """Change the given fields of a template."""
    template = await _owned(request, ctx)
    body = await read_json(request, UpdateTemplate)
    _check_tags(body.subject, body.body_text, body.body_html)
    given = body.model_fields_set
    updated = await _store(ctx).update(
        ctx.user_id,
        template.id,
        name=body.name.strip() if body.name is not None else None,
        subject=body.subject,
        body_text=body.body_text,
        body_html=body.body_html if "body_html" in given else UNSET,
    )
    if updated is None:  # deleted meanwhile
        raise NotFound("template_not_found", f"No template {template.id!r}.")
    return json_response(TemplateView.of(updated))


async def delete(request: Request, ctx: KeyedContext) -> Response:
    """Delete a template (204)."""
    template = await _owned(request, ctx)
    if not await _store(ctx).delete(ctx.user_id, template.id):
        raise NotFound("template_not_found", f"No template {template.id!r}.")
    return Response(status_code=204)


async def preview(request: Request, ctx: KeyedContext) -> Response:
    """Render a template against a lead row without sending: the text, the variables the row
    lacks, and the template's issues."""
    template = await _owned(request, ctx)
    body = await read_json(request, PreviewRequest)
    return json_response(render_template(template, await _preview_row(ctx, body)))


async def _preview_row(ctx: KeyedContext, body: PreviewRequest) -> Mapping[str, object]:
    """The row a preview renders with: the inline one, or the caller's dataset row (another
    user's dataset, or a row past the end, is a 404)."""
    if body.dataset_id is None and body.row_index is None:
        return body.row or {}  # no row at all: every variable shows as missing
    dataset_id, row_index = body.dataset_id, body.row_index
    if body.row is not None or dataset_id is None or row_index is None:
        raise InvalidRequest(
            "parameter_invalid", "Give either row, or dataset_id with row_index.", param="row"
        )
    store = DatasetStore(ctx.services.db.engine)
    if await store.get(ctx.user_id, dataset_id) is None:
        raise NotFound("dataset_not_found", f"No dataset {dataset_id!r}.")
    rows = await store.rows(dataset_id, offset=row_index, limit=1)
    if not rows or rows[0].idx != row_index:
        raise NotFound("row_not_found", f"The dataset has no row {row_index}.")
    return {**rows[0].data, **rows[0].added}


def render_template(template: Template, row: Mapping[str, object]) -> TemplatePreview:
    """Every part of ``template`` rendered with ``row`` (what send paths call, too)."""
    missing: dict[str, None] = {}
    issues: list[IssueView] = []
    out: dict[str, str] = {}
    for part, text in _parts(template.subject, template.body_text, template.body_html):
        done = tr.render(text, row, html=part == "body_html")
        out[part] = done.text
        missing.update(dict.fromkeys(done.missing))
        issues += [IssueView(part=part, **vars(issue)) for issue in done.issues]
    return TemplatePreview(
        template_id=template.id,
        subject=out["subject"],
        body_text=out["body_text"],
        body_html=out.get("body_html"),
        missing_variables=list(missing),
        issues=issues,
        complete=not missing,
    )
