"""Plans (pure data, overridable from settings): what each plan may call and how fast.

The seed: free-tier users get 403 on find and verify. ``BAVLIO_PLANS`` (JSON) replaces or adds
plans; ``BAVLIO_DEFAULT_PLAN`` is the plan of users first seen through a session token.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_PLANS", "Plan"]


class Plan(BaseModel):
    """Limits of one plan: denied price keys, requests per minute per key, signup credits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    denied: frozenset[str] = frozenset()
    rate_limit: str = "600/minute"
    signup_credits: int = Field(default=0, ge=0, le=1_000_000)
    monthly_lookups: int = Field(default=1000, ge=0, le=10_000_000)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from server.ratelimit import parse_limit

        parse_limit(value)
        return value

    def allows(self, price_key: str | None) -> bool:
        """Whether an operation with ``price_key`` is open to this plan."""
        return price_key is None or price_key not in self.denied


DEFAULT_PLANS: Mapping[str, Plan] = {
    "free": Plan(
        denied=frozenset(
            {"email.verify", "email.find", "email.bulk_find", "email.dataset_verify", "leads.batch"}
        ),
        rate_limit="60/minute",
        signup_credits=25,
        monthly_lookups=100,
    ),
    "paid": Plan(rate_limit="600/minute", signup_credits=0, monthly_lookups=10_000),
}
