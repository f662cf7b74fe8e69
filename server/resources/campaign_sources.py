"""Adding leads for the campaigns routes: read a dataset of the caller's (or inline leads) into
leads, and store them, turning the stores' refusals into error envelopes."""

from __future__ import annotations

from emailintel.verify import Validator
from server.campaigns.lead_source import Collected, ColumnUnknown, dataset_leads, email_column
from server.campaigns.lead_store import MAX_LEADS, LeadsClosed, LeadsFull, LeadStore
from server.datasets.store import DatasetStore
from server.errors import Conflict, InvalidRequest, NotFound
from server.http.keyed import KeyedContext

__all__ = ["add_collected", "collect_dataset", "validator"]

_OFFLINE = Validator(check_dns=False)


def validator(ctx: KeyedContext) -> Validator:
    """emailintel's validator of the app (offline checks only are used), or a default one."""
    found = ctx.services.validator
    return found if isinstance(found, Validator) else _OFFLINE


async def collect_dataset(
    ctx: KeyedContext, dataset_id: str, column: str | None, into: Collected | None = None
) -> Collected:
    """The caller's dataset's rows as leads (another user's dataset is a 404)."""
    store = DatasetStore(ctx.services.db.engine)
    dataset = await store.get(ctx.user_id, dataset_id)
    if dataset is None:
        raise NotFound("dataset_not_found", f"No dataset {dataset_id!r}.")
    try:
        name = email_column(dataset, column)
    except ColumnUnknown:
        raise InvalidRequest(
            "email_column_unknown",
            "The dataset has no such email column."
            if column is not None
            else "The dataset maps no email column; name one in email_column.",
            param="email_column",
        ) from None
    return await dataset_leads(store, dataset, name, validator(ctx), into or Collected())


async def add_collected(ctx: KeyedContext, campaign_id: str, collected: Collected) -> int:
    """Store the collected leads; returns how many were new to the campaign."""
    try:
        return await LeadStore(ctx.services.db.engine).add(
            ctx.user_id, campaign_id, collected.leads
        )
    except LookupError:
        raise NotFound("campaign_not_found", f"No campaign {campaign_id!r}.") from None
    except LeadsClosed:
        raise Conflict(
            "campaign_closed", f"Campaign {campaign_id!r} has ended: it takes no more leads."
        ) from None
    except LeadsFull:
        raise Conflict("too_many_leads", f"A campaign holds at most {MAX_LEADS} leads.") from None
