"""The user's campaign state machine (pure, a data table): draft → active ⇄ paused → completed |
cancelled, which action moves which state, and which fields stay editable in each state.

System holds (DNS failing, bounce rate, daily cap) are not states: they live in
``Campaign.holds`` and are written by the sequencer only, so a pause by the user and a hold by the
system never overwrite each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ACTIONS",
    "ALWAYS_EDITABLE",
    "DELETABLE",
    "EDITABLE_AFTER_LAUNCH",
    "FIELDS",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "Action",
    "Outcome",
    "State",
    "apply",
    "frozen_fields",
]

State = Literal["draft", "active", "paused", "completed", "cancelled"]
Action = Literal["launch", "pause", "resume", "cancel", "complete"]

STATES: tuple[State, ...] = ("draft", "active", "paused", "completed", "cancelled")
ACTIONS: tuple[Action, ...] = ("launch", "pause", "resume", "cancel", "complete")
TERMINAL: frozenset[State] = frozenset({"completed", "cancelled"})

TRANSITIONS: dict[tuple[State, Action], State] = {
    ("draft", "launch"): "active",
    ("draft", "cancel"): "cancelled",
    ("active", "pause"): "paused",
    ("active", "resume"): "active",  # idempotent: already running
    ("active", "cancel"): "cancelled",
    ("active", "complete"): "completed",  # the sequencer: no open lead left
    ("paused", "pause"): "paused",  # idempotent: already paused
    ("paused", "resume"): "active",
    ("paused", "cancel"): "cancelled",
    ("paused", "complete"): "completed",
    ("cancelled", "cancel"): "cancelled",  # idempotent
}
"""(state, action) → next state; a pair missing here is refused (409)."""

DELETABLE: frozenset[State] = frozenset({"draft", "paused", "completed", "cancelled"})
"""States a campaign may be deleted in: never while it is active (it may be sending)."""

FIELDS: tuple[str, ...] = (
    "name",
    "steps",
    "sender_alias_ids",
    "schedule",
    "daily_cap",
    "alias_daily_cap",
    "requires_approval",
    "stop_on_reply",
    "track_opens",
    "track_clicks",
    "dataset_id",
    "email_column",
)
"""Every field a PATCH may name."""

EDITABLE_AFTER_LAUNCH: frozenset[str] = frozenset(
    {
        "name",
        "sender_alias_ids",
        "schedule",
        "daily_cap",
        "alias_daily_cap",
        "stop_on_reply",
        "track_opens",
        "track_clicks",
    }
)
"""Active or paused: sending settings apply to future sends; the sequence (steps), the lead
source and the approval gate are frozen once leads are on their way."""

ALWAYS_EDITABLE: frozenset[str] = frozenset({"name"})
"""Completed or cancelled: only the name."""


@dataclass(frozen=True)
class Outcome:
    """An action's result: the next state, and whether anything changed."""

    state: State
    changed: bool


def apply(state: State, action: Action) -> Outcome | None:
    """The outcome of ``action`` in ``state``, or None when it is refused."""
    nxt = TRANSITIONS.get((state, action))
    return None if nxt is None else Outcome(nxt, nxt != state)


def frozen_fields(state: State, fields: frozenset[str] | set[str]) -> list[str]:
    """Of ``fields``, those that cannot change in ``state`` (sorted; empty: all may)."""
    if state == "draft":
        return []
    allowed = ALWAYS_EDITABLE if state in TERMINAL else EDITABLE_AFTER_LAUNCH
    return sorted(f for f in fields if f not in allowed)
