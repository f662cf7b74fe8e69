"""routes.keyed_group: the Operation maker of one API-key group sets its tag, access and scope;
a call naming its own overrides them."""

from __future__ import annotations

from server.errors import ErrorEnvelope
from server.resources import webhooks
from server.routes import keyed_group, operations


def test_a_group_sets_tag_access_and_scope() -> None:
    op = keyed_group("webhooks", "webhooks")
    made = op("GET", "/api/v1/x", webhooks.list_webhooks, "x_list", "X", ErrorEnvelope)
    assert (made.tag, made.access, made.scope) == ("webhooks", "api_key", "webhooks")
    assert made.request_model is None


def test_a_call_overrides_the_group() -> None:
    op = keyed_group("webhooks", "webhooks")
    made = op(
        "POST", "/api/v1/x", webhooks.create, "x", "X", ErrorEnvelope, access="jwt", scope=None
    )
    assert (made.tag, made.access, made.scope) == ("webhooks", "jwt", None)


def test_every_group_operation_is_served_behind_the_keyed_guard() -> None:
    by_id = {op.operation_id: op for op in operations()}
    for operation_id, scope in [
        ("webhooks_create", "webhooks"),
        ("campaigns_create", "campaigns"),
        ("campaigns_aggregate_stats", "campaigns"),
        ("bavimail_add_domain", "bavimail"),
    ]:
        assert by_id[operation_id].keyed
        assert by_id[operation_id].scope == scope
