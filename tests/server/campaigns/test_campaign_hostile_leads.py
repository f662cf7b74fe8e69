"""Hostile lead rows over HTTP on SQLite and PostgreSQL: a NUL in a variable's name or value is
stored as U+FFFD (as every stored string; PostgreSQL's JSON refuses NUL: it was a 500), a
non-finite number (``1e999``) is a 400 naming the field, never a stored value no JSON answer can
carry."""

from __future__ import annotations

import pytest
from camp_api_support import URL, make
from keyed_helpers import Keyed
from tests_server_helpers import assert_envelope

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("raw", "stored"),
    [('{"k": "a\\u0000b"}', {"k": "a\ufffdb"}), ('{"a\\u0000": "x"}', {"a\ufffd": "x"})],
)
async def test_a_nul_in_lead_variables_is_replaced(
    keyed: Keyed, raw: str, stored: dict[str, str]
) -> None:
    _, alice = await keyed.user()
    campaign = await make(keyed, alice)
    body = '{"leads": [{"email": "bo@client.test", "data": ' + raw + "}]}"
    added = await keyed.client.post(
        f"{URL}{campaign['id']}/leads", content=body, headers={**alice, **JSON}
    )
    assert added.status_code == 201, added.text
    listed = await keyed.client.get(f"{URL}{campaign['id']}/leads", headers=alice)
    [lead] = listed.json()["data"]
    assert stored.items() <= lead["data"].items()


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
async def test_a_non_finite_lead_variable_is_a_400(keyed: Keyed, number: str) -> None:
    _, alice = await keyed.user()
    campaign = await make(keyed, alice)
    body = '{"leads": [{"email": "bo@client.test", "data": {"k": ' + number + "}}]}"
    added = await keyed.client.post(
        f"{URL}{campaign['id']}/leads", content=body, headers={**alice, **JSON}
    )
    error = assert_envelope(added, 400, "invalid_request_error", "parameter_invalid")
    assert str(error["param"]).startswith("leads.0.data")
    listed = await keyed.client.get(f"{URL}{campaign['id']}/leads", headers=alice)
    assert listed.json()["data"] == []
