"""Preflight's aggregate queries on SQLite and PostgreSQL: the variable-token rule against the
renderer (pure, property-tested), the SQL giving the same answer (LIKE wildcards in names taken
literally), counts with the first 20 leads listed, suppressions by address and by (parent) domain
counted once, and leads stored without derived columns derived once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from factory import CampaignIds, make_campaign
from hypothesis import given, settings
from hypothesis import strategies as st

from emailintel.verify import Validator
from server.campaigns import lead_index as li
from server.campaigns import preflight as pf
from server.campaigns.lead_store import LeadStore, NewLead
from server.campaigns.preflight_facts import offline_verdict, suppressed_hits
from server.campaigns.preflight_store import PreflightStore, Summary
from server.db.engine import Database
from server.suppression.store import SuppressionStore
from server.templates import render as tr

OPEN = ("pending", "active", "waiting_approval")
_VALIDATOR = Validator(check_dns=False)
_KEYS = st.sampled_from(["a", "A", "a_b", "a b", "A-B", "axb", "a%b", "x|y", "b", "^a", "É"])
_VALUES = st.one_of(st.none(), st.sampled_from(["", " ", "v", 0, True, [1], {"k": 1}]))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_KEYS, _VALUES, max_size=5),
    _KEYS.filter(lambda k: k.isascii() and (k.isalpha() or "_" in k)),
)
def test_the_token_rule_is_the_renderers(data: dict[str, Any], name: str) -> None:
    rendered = tr.render("{{" + name + "}}", data)
    assert li.lacks(li.var_index(data), name) == bool(rendered.missing)


def _derive(rows: Any) -> list[li.LeadIndex]:
    return [li.index(e, d, offline_verdict(_VALIDATOR, e)) for _, e, d in rows]


async def _store(db: Database, leads: list[dict[str, Any]]) -> tuple[CampaignIds, PreflightStore]:
    ids = await make_campaign(db, leads=leads)
    store = PreflightStore(db.engine, ids.campaign_id, OPEN)
    assert await store.fill(_derive) == len(leads)
    return ids, store


ROWS: list[dict[str, Any]] = [
    {"email": "l0@x.test", "axb": "v"},  # "a_b" must not match axb (LIKE's _ is literal)
    {"email": "l1@x.test", "a_b": "v"},
    {"email": "l2@x.test", "A-B": "v"},  # folds to a_b
    {"email": "l3@x.test", "a_b": " ", "A-B": "v"},  # the exact key wins, and it is blank
    {"email": "l4@x.test", "a%b": "v", "b": "v"},  # a key no name can be
    {"email": "l5@x.test"},
    {"email": "l6@x.test", "Name": "v", "name": " "},  # exact keys differ only in case
    {"email": "l7@x.test", "NAME": " ", "^name": "v"},  # and a key with the case marker
]


async def test_sql_lacking_matches_the_renderer(db: Database) -> None:
    _, store = await _store(db, ROWS)
    for names in (["a_b"], ["A B"], ["a_b", "b"], ["axb"], ["name"], ["Name"], ["NAME"]):
        count = (await store.summary(names)).lacking
        first = await store.first_lacking(names, 20)
        expected = [
            row["email"]
            for row in ROWS
            if any(tr.render("{{" + n + "}}", row).missing for n in names)
        ]
        assert count == len(expected), names
        assert sorted(e for _, e, _ in first) == sorted(expected), names
    assert (await store.summary([])).lacking == 0
    assert await store.first_lacking([], 20) == []


async def test_counts_are_whole_and_listed_leads_capped(db: Database) -> None:
    leads = [{"email": f"l{i:02}@x.test"} for i in range(30)]
    leads += [{"email": "info@x.test", "name": "n"}, {"email": "not an address", "name": "n"}]
    ids, store = await _store(db, leads)
    assert await store.summary(["name"]) == Summary(
        total=32, invalid=1, risky=1, lacking=30, unfilled=0
    )
    first = await store.first_lacking(["name"], pf.MAX_LEAD_DETAILS)
    assert len(first) == 20
    ids = sorted(lead.id for lead in await LeadStore(db.engine).all(ids.campaign_id, statuses=OPEN))
    assert [i for i, _, _ in first] == [i for i in ids if i in {f[0] for f in first}]
    assert [i for i, _, _ in first] == sorted(i for i, _, _ in first)  # by id, oldest first
    [(_, email, detail)] = await store.first_with_verdict("risky", 20)
    assert (email, detail) == ("info@x.test", "role_account")
    [(_, email, _)] = await store.first_with_verdict("invalid", 20)
    assert email == "not an address"
    assert await store.domains() == {"x.test": 31, "not an address": 1}
    assert await store.first_suppressed("usr_nobody", [], 20) == []


async def test_suppressed_by_address_and_parent_domain_counted_once(db: Database) -> None:
    leads = [
        {"email": "a@sub.barred.test"},  # parent domain barred.test
        {"email": "b@barred.test"},  # domain, and its own address too
        {"email": "c@free.test"},  # its own address
        {"email": "d@free.test"},
    ]
    ids, store = await _store(db, leads)
    user_id = ids.user_id
    entries = SuppressionStore(db.engine)
    for kind, value in [
        ("domain", "barred.test"),
        ("email", "b@barred.test"),
        ("email", "c@free.test"),
    ]:
        await entries.add(user_id, kind, value, reason=None, source="manual")
    assert await store.suppressed_by_address(user_id) == {"barred.test": 1, "free.test": 1}
    first = await store.first_suppressed(user_id, ["barred.test", "sub.barred.test"], 5)
    assert sorted(e for _, e in first) == ["a@sub.barred.test", "b@barred.test", "c@free.test"]
    assert [i for i, _ in first] == sorted(i for i, _ in first)
    assert len(await store.first_suppressed(user_id, ["barred.test", "sub.barred.test"], 2)) == 2
    hits = await suppressed_hits(SimpleNamespace(db=db), user_id, store)  # type: ignore[arg-type]
    assert hits.count == 3  # b@barred.test once, though both its address and domain are barred
    assert sorted((d.email, d.detail) for d in hits.leads) == [
        ("a@sub.barred.test", "suppressed by barred.test"),
        ("b@barred.test", "suppressed by b@barred.test"),  # the most specific entry
        ("c@free.test", "suppressed by c@free.test"),
    ]


async def test_leads_stored_without_derived_columns_are_derived_once(db: Database) -> None:
    ids = await make_campaign(db, leads=[{"email": "a@x.test"}, {"email": "info@x.test"}])
    store = PreflightStore(db.engine, ids.campaign_id, OPEN)
    calls: list[int] = []

    def derive(rows: Any) -> list[li.LeadIndex]:
        calls.append(len(rows))
        return _derive(rows)

    assert (await store.summary([])).unfilled == 2
    assert await store.fill(derive) == 2
    assert await store.fill(derive) == 0
    assert (await store.summary([])).unfilled == 0
    assert calls == [2]
    # leads added through the store with a verdict carry their columns already
    added = await LeadStore(db.engine).add(
        ids.user_id,
        ids.campaign_id,
        [
            NewLead("c@x.test", {"email": "c@x.test"}, 0, ("ok", [])),
            NewLead("d@x.test", {"email": "d@x.test"}),  # no verdict: derived by preflight
        ],
    )
    assert added == 2
    assert await store.fill(derive) == 1
    assert calls == [2, 1]
    assert len(await store.first_with_verdict("ok", 20)) == 3
