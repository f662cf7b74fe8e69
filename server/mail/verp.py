"""VERP return paths (pure): each message's envelope sender names it, so a bounce links back to
the message by the address it was sent to, whatever the returned copy still holds.

A domain whose return-path record (``<subdomain>.<domain>``, see :mod:`server.mail.dns_records`)
checked out sends as ``bounces+<email id>@<subdomain>.<domain>``: the id is lower-cased (mail
systems may fold a local part's case; ours does) and read back in either case. The id is not a
secret (it is in every delivered copy's Return-Path), so a bounce is believed only for the
recipients the message really had.
"""

from __future__ import annotations

from server.ids import is_id

__all__ = ["BOUNCE_LOCAL_PART", "EMAIL_PREFIX", "verp_address", "verp_email_id"]

BOUNCE_LOCAL_PART = "bounces"
EMAIL_PREFIX = "email"


def verp_address(email_id: str, bounce_domain: str) -> str:
    """The envelope sender of message ``email_id`` on ``bounce_domain``."""
    if not is_id(email_id, EMAIL_PREFIX):
        raise ValueError("not an email id")
    return f"{BOUNCE_LOCAL_PART}+{email_id.lower()}@{bounce_domain.lower()}"


def verp_email_id(local_part: str) -> str | None:
    """The email id a bounce address's local part (``bounces+email_…``) names, or None."""
    base, plus, tag = local_part.partition("+")
    if not plus or base.lower() != BOUNCE_LOCAL_PART or len(tag) > 40:
        return None
    prefix, underscore, body = tag.partition("_")
    candidate = f"{prefix.lower()}{underscore}{body.upper()}"
    return candidate if is_id(candidate, EMAIL_PREFIX) else None
