"""The keyed API's operations (``/api/v1``): each names its access, scope and price key."""

from __future__ import annotations

from server.billing.pricing import PURCHASE_KEY
from server.billing.purchases import PURCHASE_PATH
from server.errors import ErrorEnvelope
from server.resources import account, api_keys, credits, email_verification, purchase, system
from server.routes import Operation, QueryParam
from server.usecases.email import ValidateRequest, ValidateResponse

__all__ = ["keyed_operations"]

V1 = "/api/v1"
_PAGING = (
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Rows per page (20)."),
    QueryParam("offset", {"type": "integer", "minimum": 0, "maximum": 100000}, "Rows to skip."),
    QueryParam("cursor", {"type": "string", "maxLength": 200}, "next_cursor of the last page."),
)


def keyed_operations() -> tuple[Operation, ...]:
    """Every ``/api/v1`` operation beyond health and readiness, in documentation order."""
    return (
        Operation("GET", f"{V1}/status", system.status, "status", "API status", system.Status),
        Operation(
            "GET",
            f"{V1}/api/v1/status",
            system.status,
            "status_seed_path",
            "API status (the path as the seed lists it)",
            system.Status,
        ),
        Operation(
            "GET",
            f"{V1}/capabilities",
            system.capabilities,
            "capabilities",
            "What this deployment offers: groups, plans, prices, payments",
            system.Capabilities,
        ),
        Operation(
            "GET",
            f"{V1}/auth/me",
            account.me,
            "auth_me",
            "The authenticated user",
            account.Me,
            tag="authentication",
            access="api_key",
            scope="account",
        ),
        Operation(
            "GET",
            f"{V1}/auth/verify",
            account.verify_token,
            "auth_verify",
            "Verify the credentials and return their user",
            account.Me,
            tag="authentication",
            access="api_key",
            scope="account",
        ),
        Operation(
            "GET",
            f"{V1}/users/quota-status",
            account.quota_status,
            "users_quota_status",
            "Quota status and recommendations",
            account.QuotaStatus,
            tag="users",
            access="api_key",
            scope="account",
        ),
        Operation(
            "GET",
            f"{V1}/users/usage",
            account.usage,
            "users_usage",
            "Usage over the last 30 days",
            account.Usage,
            tag="users",
            access="api_key",
            scope="account",
        ),
        Operation(
            "POST",
            f"{V1}/api-keys",
            api_keys.create,
            "api_keys_create",
            "Create an API key (session token only; the key is shown once)",
            api_keys.ApiKeyCreated,
            api_keys.CreateApiKey,
            tag="api-keys",
            access="jwt",
            status_code=201,
            responses={409: ErrorEnvelope},
        ),
        Operation(
            "GET",
            f"{V1}/api-keys",
            api_keys.list_keys,
            "api_keys_list",
            "List API keys (prefixes, never keys)",
            api_keys.ApiKeyList,
            tag="api-keys",
            access="jwt",
        ),
        Operation(
            "DELETE",
            f"{V1}/api-keys/{{key_id}}",
            api_keys.revoke,
            "api_keys_revoke",
            "Revoke an API key",
            api_keys.ApiKeyView,
            tag="api-keys",
            access="jwt",
            responses={404: ErrorEnvelope},
        ),
        Operation(
            "GET",
            f"{V1}/credits/balance",
            credits.balance,
            "credits_balance",
            "Credit balance",
            credits.CreditBalance,
            tag="credits",
            access="api_key",
            scope="credits",
        ),
        Operation(
            "GET",
            f"{V1}/credits/transactions",
            credits.transactions,
            "credits_transactions",
            "Credit ledger, newest first",
            credits.TransactionList,
            tag="credits",
            access="api_key",
            scope="credits",
            query=(
                *_PAGING,
                QueryParam(
                    "operation_type",
                    {"type": "string", "pattern": r"^[a-z_][a-z0-9_.]{0,63}$"},
                    "Only lines of this operation (a price key, signup_bonus, grant, …).",
                ),
            ),
        ),
        Operation(
            "POST",
            f"{V1}/credits/estimate",
            credits.estimate,
            "credits_estimate",
            "Estimate an operation's credits",
            credits.Estimate,
            credits.EstimateRequest,
            tag="credits",
            access="api_key",
            scope="credits",
        ),
        Operation(
            "POST",
            PURCHASE_PATH,
            purchase.purchase_settled,
            "credits_purchase",
            "Buy credits with a wallet (x402): one pack per settled payment",
            purchase.Purchase,
            purchase.PurchaseRequest,
            tag="credits",
            access="api_key",
            scope="credits",
            price_key=PURCHASE_KEY,
            wallet=True,
            responses={503: ErrorEnvelope},
        ),
        Operation(
            "POST",
            f"{V1}/email-verification/validate",
            email_verification.validate,
            "email_verification_validate",
            "Validate an address and return its risk (synchronous)",
            ValidateResponse,
            ValidateRequest,
            tag="email-verification",
            access="api_key",
            scope="email-verification",
            price_key="email.validate",
            responses={402: ErrorEnvelope, 503: ErrorEnvelope},
        ),
    )
