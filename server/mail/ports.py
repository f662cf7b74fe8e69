"""What the outbox needs from the rest of BaviMail, as injectable callables: the sending
identity of a From address (sending domains), the suppression list, and a relay hand-off probe.

The defaults refuse every sender and suppress nobody until the real modules are wired in
(``server.mail.identity.sending_identity``, ``server.suppression``): tests inject their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "HandoffAnswer",
    "HandoffProbe",
    "IdentityLookup",
    "SenderNotAllowed",
    "SendingIdentityView",
    "SuppressionCheck",
    "no_identities",
    "nothing_suppressed",
]


class SenderNotAllowed(Exception):
    """The From address may not send (no verified domain, unknown alias); ``code`` for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SendingIdentityView(Protocol):
    """The fields of ``server.mail.identity.SendingIdentity`` the outbox reads (and, when
    present, ``return_path``: the bounce domain of VERP envelope senders, server.mail.verp)."""

    @property
    def domain(self) -> str: ...
    @property
    def selector(self) -> str: ...
    @property
    def private_key_pem(self) -> bytes: ...
    @property
    def alias_display_name(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def tracking(self) -> bool: ...


IdentityLookup = Callable[[str, str], Awaitable[SendingIdentityView]]
"""``(user_id, from_address) -> identity``; raises :class:`SenderNotAllowed`."""

SuppressionCheck = Callable[[str, Sequence[str]], Awaitable[Mapping[str, str]]]
"""``(user_id, addresses) -> {suppressed address: reason}`` (one batch call per message)."""


@dataclass(frozen=True, slots=True)
class HandoffAnswer:
    """Whether the relay queued a message (None: cannot tell) and its queue id if known."""

    accepted: bool | None
    queue_id: str | None = None


HandoffProbe = Callable[[str], Awaitable[HandoffAnswer]]
"""``message_id -> answer``: asked for a message whose hand-off nobody saw end."""


async def no_identities(user_id: str, from_address: str) -> SendingIdentityView:
    """The default before sending domains are wired: nobody may send."""
    raise SenderNotAllowed(
        "domain_not_verified", "The From address is not on a verified sending domain."
    )


async def nothing_suppressed(user_id: str, addresses: Sequence[str]) -> Mapping[str, str]:
    """The default before the suppression list is wired: nobody is suppressed."""
    return {}
