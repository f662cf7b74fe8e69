"""The ``{{variable}}`` renderer (pure): substitutes a lead row's values into a template part and
reports what it could not fill, so a send path can refuse instead of mailing a blank.

Syntax: ``{{name}}`` or ``{{name|fallback}}``, whitespace allowed inside the braces. A name is
1 to 64 characters: a letter or ``_`` then letters, digits, ``_``, ``-``, ``.`` or spaces.

Matching a name to a row key: an exact key wins; otherwise keys are compared by their *folded*
form (case-folded, runs of spaces, ``-`` and ``_`` made one ``_``, ends trimmed), so
``{{First Name}}``, ``{{first_name}}`` and ``{{FIRST-NAME}}`` all read a ``first_name`` column.
Several keys folding alike: the first in sorted order, so the choice is deterministic.

A value is used when it is a string, number or boolean that is not blank after trimming; a
missing, null, blank or nested (list/object) value takes the fallback when the tag has one
(``{{x|}}`` is an explicit empty fallback), else the tag stays in the output as written and its
name is listed in ``missing``. Values are substituted once: a value containing ``{{x}}`` is never
expanded again. In HTML parts values are HTML-escaped; fallbacks are template text (the author's)
and copied as written. A ``{{`` that does not open a well-formed tag is kept as text and
reported as an issue, as is a stray ``}}``; tags past :data:`MAX_TAGS` are kept as text too.
Rendering is linear in the template and never raises.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_FALLBACK_CHARS",
    "MAX_TAGS",
    "MAX_TEMPLATE_CHARS",
    "Issue",
    "Rendered",
    "fold",
    "has_value",
    "render",
    "scan",
    "variables",
]

MAX_TEMPLATE_CHARS = 100_000
"""Longest template part the API stores (the renderer itself accepts any length)."""
MAX_TAGS = 200
"""Variables per template part; later tags are left as text (``too_many_tags``)."""
MAX_FALLBACK_CHARS = 200
MAX_ISSUES = 50
"""Issues reported per part (the first ones, in order)."""

_NAME = r"[A-Za-z_][A-Za-z0-9_. -]{0,63}"
_TAG = re.compile(
    r"\{\{[ \t]*(?P<name>" + _NAME + r")[ \t]*"
    r"(?:\|(?P<fallback>[^{}|\r\n]{0," + str(MAX_FALLBACK_CHARS) + r"}))?\}\}"
)
_SEPARATORS = re.compile(r"[\s_-]+")
_MARK = re.compile(r"\{\{|\}\}")


@dataclass(frozen=True)
class Issue:
    """Something in the template kept as text: ``code`` (``unclosed_tag``, ``stray_close``,
    ``too_many_tags``), its character ``offset`` and a short excerpt."""

    code: str
    offset: int
    excerpt: str


@dataclass(frozen=True)
class Tag:
    """A well-formed variable tag at ``start``..``end``."""

    start: int
    end: int
    name: str
    fallback: str | None


@dataclass(frozen=True)
class Rendered:
    """The rendered text, the variables without a value or fallback (first-seen order, each
    once, as written in the template), and the issues."""

    text: str
    missing: tuple[str, ...]
    issues: tuple[Issue, ...]

    @property
    def complete(self) -> bool:
        """Every variable got a value or a fallback."""
        return not self.missing


def fold(name: str) -> str:
    """The form names and row keys are matched by (case-folded, separators unified)."""
    return _SEPARATORS.sub("_", name.strip().casefold()).strip("_")


def scan(template: str) -> tuple[list[Tag], list[Issue]]:
    """The well-formed tags (at most :data:`MAX_TAGS`) and the issues, left to right.

    At each ``{{`` a whole tag is tried; when none fits, that one ``{`` is text and scanning
    resumes at the next character, so ``{{{x}}}`` is ``{`` + tag + ``}``.
    """
    tags: list[Tag] = []
    issues: list[Issue] = []

    def note(code: str, offset: int) -> None:
        if len(issues) < MAX_ISSUES:
            issues.append(Issue(code, offset, template[offset : offset + 40]))

    pos = 0
    while True:
        mark = _MARK.search(template, pos)
        if mark is None:
            break
        at = mark.start()
        if mark.group() == "}}":
            note("stray_close", at)
            pos = at + 2
            continue
        match = _TAG.match(template, at)
        if match is None:
            if template.startswith("{{{", at):  # the inner "{{" may open a tag
                pos = at + 1
                continue
            note("unclosed_tag", at)
            pos = at + 2
            continue
        if len(tags) >= MAX_TAGS:
            note("too_many_tags", at)
            break
        fallback = match.group("fallback")
        tags.append(
            Tag(
                at,
                match.end(),
                match.group("name").strip(),
                None if fallback is None else fallback.strip(),
            )
        )
        pos = match.end()
    return tags, issues


def _value(raw: object) -> str | None:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    if isinstance(raw, str) and raw.strip():
        return raw
    return None


def has_value(raw: object) -> bool:
    """Whether a row value fills a tag (a string, number or boolean not blank after trimming)."""
    return _value(raw) is not None


class _Row:
    """A row's keys indexed by exact and folded name (built once per render)."""

    def __init__(self, row: Mapping[str, object]) -> None:
        self.row = row
        self.folded: dict[str, str] = {}
        for key in sorted(k for k in row if isinstance(k, str)):
            self.folded.setdefault(fold(key), key)

    def get(self, name: str) -> str | None:
        if name in self.row:
            return _value(self.row[name])
        key = self.folded.get(fold(name))
        return None if key is None else _value(self.row[key])


def render(template: str, row: Mapping[str, object], *, html: bool = False) -> Rendered:
    """``template`` with ``row``'s values substituted (HTML-escaped when ``html``)."""
    tags, issues = scan(template)
    values = _Row(row)
    out: list[str] = []
    missing: dict[str, None] = {}
    pos = 0
    for tag in tags:
        out.append(template[pos : tag.start])
        value = values.get(tag.name)
        if value is not None:
            out.append(_html.escape(value, quote=True) if html else value)
        elif tag.fallback is not None:
            out.append(tag.fallback)
        else:
            out.append(template[tag.start : tag.end])
            missing.setdefault(tag.name)
        pos = tag.end
    out.append(template[pos:])
    return Rendered("".join(out), tuple(missing), tuple(issues))


def variables(template: str) -> tuple[str, ...]:
    """The variable names a template uses (first-seen order, each once)."""
    tags, _ = scan(template)
    return tuple(dict.fromkeys(tag.name for tag in tags))
