"""The job kinds this deployment runs and the terminal hook that settles their credits.

``register(queue, settings)`` is the default ``BAVLIO_JOB_HANDLERS`` entry (``bavlio worker``
builds its own services from settings); ``bavlio serve`` calls :func:`register_with` with the
app's services, so an embedded worker probes with the app's resolver and prober.

Credits: the route reserves the job's price before enqueueing (the hold's id rides in the
payload); when the job ends the hook captures what was delivered (single jobs: all when they
succeeded; bulk jobs: the rows answered, at the volume discount) and returns the rest. Skipped
and failed rows cost nothing. A hold settles once, so a hook delivered twice charges once.
"""

from __future__ import annotations

from typing import Any

from server.billing.credits import CreditStore
from server.billing.pricing import credits_for
from server.datasets.store import DatasetStore
from server.errors import ApiError
from server.jobs.errors import JobError, SkipItem
from server.jobs.models import Job, JobItem
from server.jobs.queue import JobQueue
from server.jobs.rules import JobState
from server.services import Services
from server.sessions import processing as session_processing
from server.sessions.rules import LeadFields
from server.sessions.store import SessionStore
from server.settings import Settings

__all__ = ["BILLING", "KINDS", "register", "register_with"]

BILLING = "_billing"
"""Payload key of ``{"hold_id", "price_key"}``: the reservation a job settles when it ends."""

KINDS = {
    "email.find": "email.find",
    "email.verify": "email.verify",
    "email.bulk_find": "email.bulk_find",
    "email.bulk_verify": "email.dataset_verify",
    "email.dataset_verify": "email.dataset_verify",
    "leads.batch": "leads.batch",
    "session.process": "session.process",
}
"""Job kind -> its price key (a session job reserves several: see server.sessions)."""


def register(queue: JobQueue, settings: Settings) -> None:
    """Every kind and the credit hook, on services built from ``settings`` (``bavlio worker``)."""
    from server.services import configured_prober

    register_with(queue, Services.build(settings, prober=configured_prober(settings=settings)))


def _job_error(exc: ApiError) -> JobError:
    """An envelope error as a job's public error (code and message are already safe)."""
    return JobError(exc.code, exc.message)


def register_with(queue: JobQueue, svc: Services) -> None:
    """Register the kinds with handlers running on ``svc`` and the credit-settling hook."""
    from server.usecases import email as email_cases
    from server.usecases import find as find_cases
    from server.usecases import linkedin as linkedin_cases

    async def find(ctx: Any) -> Any:
        body = find_cases.FindRequest.model_validate(
            {k: v for k, v in ctx.payload.items() if k != BILLING}
        )
        try:
            return (await find_cases.find(svc, body)).model_dump(mode="json")
        except ApiError as exc:
            raise _job_error(exc) from None

    async def verified(email: str) -> Any:
        """The verify use case's answer, cached as the address's verdict."""
        try:
            result = (await email_cases.verify(svc, email)).model_dump(mode="json")
        except ApiError as exc:
            raise _job_error(exc) from None
        await svc.verdicts.put(email, result)
        return result

    async def verify(ctx: Any) -> Any:
        return await verified(ctx.payload["email"])

    async def found(row: dict[str, Any]) -> Any:
        """The find use case for a person at a domain, or at a company resolved to one."""
        if row.get("domain") is None:
            domain = await svc.prospects.domain_for_company(row.get("company") or "")
            if domain is None:
                raise SkipItem("unresolved")
            row["domain"] = domain
        body = find_cases.FindRequest.model_validate(
            {k: row[k] for k in ("first_name", "last_name", "domain")}
        )
        try:
            result = await find_cases.find(svc, body)
        except ApiError as exc:
            raise _job_error(exc) from None
        return {"domain": row["domain"], **result.model_dump(mode="json")}

    async def bulk_row(ctx: Any, item: JobItem) -> Any:
        return await found(dict(item.input))

    async def verify_row(ctx: Any, item: JobItem) -> Any:
        return await verified(str(item.input))

    async def dataset_row(ctx: Any, item: JobItem) -> Any:
        """Verify one row's address and write its risk columns into the dataset row; a verdict
        cached within its window is used free (the row is skipped as ``cached``)."""
        from server.datasets.rules import failure_cells, risk_cells
        from server.datasets.store import DatasetStore

        store = DatasetStore(svc.db.engine)
        dataset_id = str(ctx.payload["dataset_id"])
        row, email = int(item.input["row"]), str(item.input["email"])
        cached = await svc.verdicts.get(email)
        if cached is not None:
            await store.annotate(dataset_id, {row: risk_cells(cached.result)})
            raise SkipItem("cached")
        try:
            result = await verified(email)
        except JobError as exc:
            await store.annotate(dataset_id, {row: failure_cells(exc.code)})
            raise
        cells = risk_cells(result)
        await store.annotate(dataset_id, {row: cells})
        return {"row": row, **cells}

    async def linkedin(person: Any) -> Any:
        """The LinkedIn use case for a name at a company."""
        body = linkedin_cases.LinkedInRequest.model_validate(person)
        try:
            return (await linkedin_cases.find_linkedin_url(svc, body)).model_dump(mode="json")
        except ApiError as exc:
            raise _job_error(exc) from None

    async def lead(ctx: Any, item: JobItem) -> Any:
        return await linkedin(item.input)

    async def validated(email: str) -> Any:
        """The validate use case (syntax, lists, typo, MX)."""
        try:
            return (await email_cases.validate(svc, email)).model_dump(mode="json")
        except ApiError as exc:
            raise _job_error(exc) from None

    def person(lead: LeadFields) -> dict[str, Any]:
        named = {"first_name": lead.first_name, "last_name": lead.last_name}
        where = {"domain": lead.domain} if lead.domain else {"company": lead.company}
        return {**named, **where}

    def profile(lead: LeadFields) -> dict[str, Any]:
        extra = {"title": lead.title, "location": lead.location}
        base = {"name": lead.full_name, "company": lead.company}
        return {**base, **{k: v for k, v in extra.items() if v is not None}}

    steps = session_processing.Steps(
        validate=lambda lead: validated(str(lead.email)),
        verify=lambda lead: verified(str(lead.email)),
        find=lambda lead: found(person(lead)),
        linkedin=lambda lead: linkedin(profile(lead)),
    )
    datasets = DatasetStore(svc.db.engine)

    async def session_row(ctx: Any, item: JobItem) -> Any:
        return await session_processing.run_row(
            steps, datasets, str(ctx.payload["dataset_id"]), item
        )

    queue.register("email.find", find)
    queue.register("email.verify", verify)
    queue.register("email.bulk_find", item_handler=bulk_row, item_concurrency=4)
    queue.register("email.bulk_verify", item_handler=verify_row, item_concurrency=8)
    queue.register("email.dataset_verify", item_handler=dataset_row, item_concurrency=8)
    queue.register("leads.batch", item_handler=lead, item_concurrency=4)
    queue.register(session_processing.KIND, item_handler=session_row, item_concurrency=4)
    queue.on_terminal(_settle(svc))
    queue.on_terminal(_session_ended(svc))
    queue.on_terminal(_notify(svc))


_JOB_EVENTS = {
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
}


def _notify(svc: Services) -> Any:
    """Raise ``job.*`` webhook events (once per job: the event id is the job's)."""

    async def notify(job: Job) -> None:
        event = _JOB_EVENTS.get(job.state)
        if event is None:
            return
        summary = job.as_json()
        summary.pop("result", None)  # receivers fetch the result; events stay small
        await svc.webhooks.emit(job.owner_id, event, summary, event_id=f"evt_{job.id}")

    return notify


def _settle(svc: Services) -> Any:
    async def settle(job: Job) -> None:
        billing = job.payload.get(BILLING) if isinstance(job.payload, dict) else None
        if not isinstance(billing, dict):
            return
        credits = CreditStore(svc.db.engine)
        hold_id = str(billing.get("hold_id"))
        parts = billing.get("parts")
        if isinstance(parts, dict):  # several prices: the rows each one answered
            items = await _all_items(svc, job)
            delivered = session_processing.delivered_credits(parts, svc.prices, items)
        elif job.counts.total:  # a bulk job: the rows answered
            price = svc.prices[str(billing.get("price_key"))]
            delivered = credits_for(price, job.counts.done).total if job.counts.done else 0
        else:
            price = svc.prices[str(billing.get("price_key"))]
            delivered = price.credits if job.state is JobState.SUCCEEDED else 0
        hold = await credits.hold(job.owner_id, hold_id)
        if hold is None:
            return
        if delivered > 0:
            await credits.capture(job.owner_id, hold_id, min(delivered, hold.amount))
        else:
            await credits.release(job.owner_id, hold_id)

    return settle


async def _all_items(svc: Services, job: Job) -> list[JobItem]:
    """Every item of a job, a page at a time (bounded by the job layer's item limit)."""
    items: list[JobItem] = []
    while True:
        after = items[-1].index if items else -1
        page = await svc.jobs.store.list_items(job.id, after, 1000)
        items.extend(page)
        if len(page) < 1000:
            return items


def _session_ended(svc: Services) -> Any:
    sessions = SessionStore(svc.db.engine)

    async def ended(job: Job) -> None:
        if job.kind == session_processing.KIND:
            await session_processing.job_ended(sessions, job)

    return ended
