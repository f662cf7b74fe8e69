"""Who is calling: a :class:`Principal` from an API key or a session token, or a 401.

Credentials come as ``Authorization: Bearer <key or token>`` or ``X-API-Key: <key>``. A value
starting with ``bav_live_`` is a key (checked offline for format and checksum first); anything
else is a session JWT. A user first seen through a token is created with the token's plan or the
default plan and receives that plan's signup credits once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

from server.auth import keys
from server.auth.plans import Plan
from server.auth.scopes import ALL
from server.auth.sessions import SessionError, SessionVerifier
from server.auth.store import AccountStore, KeyRecord, UserRecord
from server.billing.credit_rules import EntryKind
from server.billing.credits import CreditStore
from server.errors import Unauthorized

__all__ = ["Authenticator", "Principal", "grant_signup_credits"]

MAX_CREDENTIAL = 8192


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user, the key (None for a session), its scopes and plan."""

    user: UserRecord
    key: KeyRecord | None
    scopes: tuple[str, ...]
    plan: Plan
    plan_name: str
    via: Literal["api_key", "jwt"]
    available_credits: int | None = None
    """Credits available when the key was read (a pre-check; None for session tokens)."""

    @property
    def rate_identity(self) -> str:
        """What the rate limiter counts: the key, or the user for session tokens."""
        return f"key:{self.key.id}" if self.key is not None else f"user:{self.user.id}"


async def grant_signup_credits(credits: CreditStore, user_id: str, plan: Plan) -> None:
    """The plan's signup credits, booked once per user (reference ``signup``)."""
    if plan.signup_credits > 0:
        await credits.add(
            user_id,
            plan.signup_credits,
            kind=EntryKind.GRANT,
            reference="signup",
            operation="signup_bonus",
        )


@dataclass
class Authenticator:
    """Turns request credentials into a :class:`Principal`."""

    accounts: AccountStore
    credits: CreditStore
    sessions: SessionVerifier
    plans: dict[str, Plan]
    default_plan: str

    def _plan(self, name: str) -> tuple[str, Plan]:
        if name in self.plans:
            return name, self.plans[name]
        return self.default_plan, self.plans[self.default_plan]

    async def authenticate(self, request: Request) -> Principal:
        """The caller, or :class:`Unauthorized` (``missing_credentials``, ``invalid_api_key``,
        ``invalid_token``)."""
        credential = _credential(request)
        if credential is None:
            raise Unauthorized(
                "missing_credentials",
                "Send an API key (Authorization: Bearer bav_live_…) or a session token.",
            )
        if credential.startswith(keys.KEY_PREFIX):
            found = await self.accounts.authenticate(credential)
            if found is None:
                raise Unauthorized("invalid_api_key", "The API key is invalid or revoked.")
            user, key, available = found
            name, plan = self._plan(user.plan)
            return Principal(user, key, key.scopes, plan, name, "api_key", available)
        try:
            claims = await self.sessions.verify(credential)
        except SessionError as exc:
            raise Unauthorized("invalid_token", f"The session token is refused: {exc}.") from None
        first_plan, _ = self._plan(claims.plan or self.default_plan)
        user, created = await self.accounts.user_for_subject(
            claims.subject, email=claims.email, plan=first_plan
        )
        name, plan = self._plan(user.plan)
        if created:
            await grant_signup_credits(self.credits, user.id, plan)
        return Principal(user, None, (ALL,), plan, name, "jwt")


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("invalid_authorization", "Use Authorization: Bearer <credential>.")
    else:
        value = (request.headers.get("x-api-key") or "").strip()
        if not value:
            return None
    if len(value) > MAX_CREDENTIAL:
        raise Unauthorized("invalid_token", "The credential is too long.")
    return value
