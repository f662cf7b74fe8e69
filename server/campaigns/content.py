"""A lead's email for one step (pure): the variant's template (from the template store) or its
inline subject/text/html, with the lead's ``{{variables}}`` filled in by
:mod:`server.templates.render`, then the unsubscribe footer every campaign message carries."""

from __future__ import annotations

import html as _html
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from server.templates.render import render

__all__ = ["Content", "ContentError", "TemplateParts", "render_step", "with_unsubscribe"]


class ContentError(ValueError):
    """A step that cannot be rendered for a lead (``code``: missing_variables, no_content,
    template_not_found); ``detail`` says which."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class TemplateParts:
    """The parts of a stored template the campaign renders."""

    subject: str
    text: str | None
    html: str | None


@dataclass(frozen=True)
class Content:
    """A rendered email: subject, bodies and the variant it came from."""

    variant: str
    subject: str
    text: str | None
    html: str | None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def render_step(
    variant: Mapping[str, Any],
    lead: Mapping[str, Any],
    template: TemplateParts | None = None,
) -> Content:
    """Render ``variant`` for ``lead`` (the template when the variant names one, which the
    caller loaded as ``template``); ContentError when a variable has no value nor fallback."""
    label = str(variant.get("label") or "A")[:16]
    if variant.get("template_id"):
        if template is None:
            raise ContentError("template_not_found", str(variant["template_id"])[:64])
        parts = template
    else:
        parts = TemplateParts(
            str(variant.get("subject") or ""),
            _text(variant.get("text")),
            _text(variant.get("html")),
        )
    if not parts.subject.strip() or (parts.text is None and parts.html is None):
        raise ContentError("no_content", f"variant {label} has no subject or no body")
    subject = render(parts.subject, lead)
    text = render(parts.text, lead) if parts.text is not None else None
    html = render(parts.html, lead, html=True) if parts.html is not None else None
    missing: dict[str, None] = dict.fromkeys(subject.missing)
    for part in (text, html):
        if part is not None:
            missing.update(dict.fromkeys(part.missing))
    if missing:
        raise ContentError("missing_variables", ", ".join(list(missing)[:10]))
    # A subject is one header line: line breaks a value brought in become spaces.
    one_line = " ".join(subject.text.split())
    return Content(
        label,
        one_line,
        text.text if text is not None else None,
        html.text if html is not None else None,
    )


_HTML_FOOTER = (
    '<p style="font-size:12px;color:#888"><a href="{url}">Unsubscribe</a> from these emails.</p>'
)


def with_unsubscribe(content: Content, url: str) -> Content:
    """``content`` with the unsubscribe link appended to each body (before ``</body>``)."""
    text = content.text
    if text is not None:
        text = f"{text.rstrip()}\n\n--\nUnsubscribe: {url}\n"
    html = content.html
    if html is not None:
        footer = _HTML_FOOTER.format(url=_html.escape(url, quote=True))
        lower = html.lower()
        at = lower.rfind("</body>")
        html = html[:at] + footer + html[at:] if at >= 0 else html + footer
    return replace(content, text=text, html=html)
