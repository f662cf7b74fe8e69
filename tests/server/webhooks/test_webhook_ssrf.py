"""The webhook SSRF rule attacked for real: address spellings that mean a private host (mapped,
NAT64, 6to4, octal, decimal, short forms, link-local with a zone, metadata names) refused; a
name that resolves inward (through this host's real resolver) refused at dispatch, which is
where a rebinding name shows its second answer; and a redirect is never followed."""

from __future__ import annotations

import socket

import pytest
from webhook_receiver import Receiver, running_receiver

from server.auth.store import AccountStore
from server.db.engine import Database
from server.webhooks.destination import Destination, DestinationError, parse_url, resolve
from server.webhooks.dispatch import Dispatcher
from server.webhooks.store import WebhookStore

INWARD = [
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[2002:7f00:1::]/",
    "https://0.0.0.0/",
    "https://[::]/",
    "https://[::1]/",
    "https://127.1/",
    "https://0177.0.0.1/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://[fe80::1%25eth0]/",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/",
    "https://metadata.google.internal/",
    "https://1.1.1.1@127.0.0.1/",
]


@pytest.mark.parametrize("url", INWARD)
async def test_inward_spellings_never_get_an_address(url: str) -> None:
    with pytest.raises(DestinationError) as refused:
        await resolve(parse_url(url))
    assert refused.value.code in ("destination_forbidden", "url_credentials")


async def test_a_name_resolving_inward_is_refused_at_dispatch() -> None:
    host = socket.gethostname()  # answered by this host's resolver with a loopback address
    assert all(info[4][0].startswith("127.") for info in socket.getaddrinfo(host, 443))
    with pytest.raises(DestinationError) as refused:
        await resolve(Destination("https", host, 443, "/"))
    assert refused.value.code == "destination_forbidden"


async def test_redirects_are_not_followed(db: Database) -> None:
    user, _ = await AccountStore(db.engine, b"k" * 32).user_for_subject(
        "hooks", email=None, plan="paid"
    )
    store = WebhookStore(db.engine, lambda: b"s" * 32)
    with running_receiver() as inner:
        outer = Receiver(statuses=[302], location=f"{inner.url}/internal")
        with running_receiver(outer):
            endpoint, _ = await store.create(user.id, url=outer.url, description="", event_types=[])
            await store.emit(user.id, "job.succeeded", {"id": "job_1"})
            dispatcher = Dispatcher(store, allow_private=True, allow_http=True)
            try:
                assert await dispatcher.tick() == 1
            finally:
                await dispatcher.aclose()
        assert len(outer.received) == 1
        assert inner.received == []  # the Location was never visited
    [delivery] = await store.deliveries(user.id, endpoint.id, limit=1)
    assert (delivery.last_status, delivery.last_error) == (302, "http_302")
