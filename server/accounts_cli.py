"""``bavlio users create`` and ``bavlio credits grant``: what the seed's dashboard does, from a
shell (an operator creating accounts, a demo, a test)."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from server.settings import Settings

__all__ = ["AccountCommandError", "credits_grant", "users_create"]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class AccountCommandError(Exception):
    """A refused argument (one line for stderr)."""


async def _with_services(settings: Settings) -> Any:
    import httpx

    from server.db.engine import Database
    from server.services import KeyedServices

    db = Database.from_settings(settings)
    await db.migrate()
    http = httpx.AsyncClient(timeout=5.0)
    return db, http, KeyedServices.build(settings, db, http)


async def users_create(
    settings: Settings, email: str, *, plan: str | None, key: bool, scopes: list[str]
) -> dict[str, Any]:
    """Create (or find) the user ``email``; return its id, plan, a session token, maybe a key."""
    from server.auth.principal import grant_signup_credits
    from server.auth.scopes import normalise
    from server.auth.sessions import issue_session_jwt

    if not _EMAIL.match(email):
        raise AccountCommandError(f"not an email address: {email!r}")
    plans = settings.plan_table()
    chosen = plan or settings.default_plan
    if chosen not in plans:
        raise AccountCommandError(f"unknown plan {chosen!r} (known: {', '.join(sorted(plans))})")
    try:
        granted = normalise(scopes)
    except ValueError as exc:
        raise AccountCommandError(str(exc)) from None
    db, http, keyed = await _with_services(settings)
    try:
        user, created = await keyed.accounts.user_for_subject(email, email=email, plan=chosen)
        if not created and plan is not None and user.plan != plan:
            await keyed.accounts.set_plan(user.id, plan)
        if created:
            await grant_signup_credits(keyed.credits, user.id, plans[chosen])
        secret = keyed.authenticator.sessions.secret
        assert secret is not None
        out: dict[str, Any] = {
            "user_id": user.id,
            "email": email,
            "plan": plan or user.plan,
            "created": created,
            "session_token": issue_session_jwt(secret, email, email=email, plan=plan or user.plan),
        }
        if key:
            raw, record = await keyed.accounts.create_key(user.id, "cli", granted)
            out["api_key"] = raw
            out["api_key_id"] = record.id
        return out
    finally:
        await http.aclose()
        await db.dispose()


async def credits_grant(
    settings: Settings, user: str, amount: int, *, reference: str | None
) -> dict[str, Any]:
    """Grant ``amount`` credits to a user (by id or email), once per ``reference``."""
    from server.billing.credit_rules import CreditRuleError, EntryKind, validate_amount

    try:
        validate_amount(amount)
    except CreditRuleError as exc:
        raise AccountCommandError(str(exc)) from None
    db, http, keyed = await _with_services(settings)
    try:
        record = await keyed.accounts.lookup(user)
        if record is None:
            raise AccountCommandError(f"no user {user!r}")
        ref = reference or "cli-" + secrets.token_hex(8)
        booked = await keyed.credits.add(
            record.id, amount, kind=EntryKind.GRANT, reference=ref, operation="grant"
        )
        balance = await keyed.credits.balance(record.id)
        return {
            "user_id": record.id,
            "granted": amount if booked else 0,
            "reference": ref,
            "already_granted": not booked,
            "balance": balance.balance,
            "available": balance.available,
        }
    finally:
        await http.aclose()
        await db.dispose()


def dumps(value: dict[str, Any]) -> str:
    """One JSON line."""
    return json.dumps(value, separators=(",", ":"))
