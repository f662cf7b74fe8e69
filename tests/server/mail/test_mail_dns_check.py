"""The record checker: a table of answers and their statuses, SPF lookup counting, and totality
(any answers give a status per record and never raise)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.mail.dns_check import (
    Answer,
    Answers,
    check_records,
    dmarc_problem,
    spf_lookups,
    spf_targets,
    verdict,
)
from server.mail.dns_records import DkimKey, DnsRecord, MailConfig, records_for

KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest"
OTHER = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAother"
CONFIG = MailConfig(
    relay_host="relay.example.net",
    relay_ips=("192.0.2.10",),
    return_path_host="rp.example.net",
    inbound_mx_host="mx.example.net",
)
KEYS = (DkimKey("sel1", KEY, "active", 0.0),)
RECORDS = records_for("acme.test", KEYS, CONFIG, inbound=True)
SPF = "v=spf1 a:relay.example.net ip4:192.0.2.10 ~all"
GOOD_TXT = {
    "sel1._domainkey.acme.test": Answer("ok", (f"v=DKIM1; k=rsa; p={KEY}",)),
    "acme.test": Answer("ok", (SPF, "google-site-verification=abc")),
    "_dmarc.acme.test": Answer("ok", ("v=DMARC1; p=none; rua=mailto:d@acme.test",)),
}
GOOD = Answers(
    txt=GOOD_TXT,
    cname={"bounces.acme.test": Answer("ok", ("rp.example.net",))},
    mx={"acme.test": Answer("ok", ("mx.example.net",))},
)


def _status(answers: Answers, purpose: str) -> str:
    return {c.record.purpose: c.status for c in check_records(RECORDS, answers)}[purpose]


def _with_txt(name: str, answer: Answer, **extra: Answer) -> Answers:
    return Answers(txt={**GOOD_TXT, name: answer, **extra}, cname=GOOD.cname, mx=GOOD.mx)


def test_all_good_is_verified() -> None:
    checks = check_records(RECORDS, GOOD)
    assert {c.status for c in checks} == {"ok"}
    assert verdict(checks) == "verified"


@pytest.mark.parametrize(
    ("name", "answer", "purpose", "status"),
    [
        ("sel1._domainkey.acme.test", Answer("nxdomain"), "dkim", "missing"),
        ("sel1._domainkey.acme.test", Answer("nodata"), "dkim", "missing"),
        ("sel1._domainkey.acme.test", Answer("timeout"), "dkim", "lookup_failed"),
        ("sel1._domainkey.acme.test", Answer("error"), "dkim", "lookup_failed"),
        ("sel1._domainkey.acme.test", Answer("ok", (f"v=DKIM1; p={OTHER}",)), "dkim",
         "dkim_key_mismatch"),
        ("sel1._domainkey.acme.test", Answer("ok", ("v=DKIM1; p=",)), "dkim",
         "dkim_key_mismatch"),
        ("sel1._domainkey.acme.test", Answer("ok", ("hello",)), "dkim", "wrong_value"),
        ("sel1._domainkey.acme.test", Answer("ok", (f"v=DKIM1; p={KEY}", f"p={OTHER}")),
         "dkim", "wrong_value"),
        ("sel1._domainkey.acme.test", Answer("ok", (f"v=DKIM1; p={KEY[:20]} {KEY[20:]}",)),
         "dkim", "ok"),
        ("acme.test", Answer("ok", ("unrelated",)), "spf", "missing"),
        ("acme.test", Answer("nxdomain"), "spf", "missing"),
        ("acme.test", Answer("ok", (SPF, "v=spf1 mx -all")), "spf", "extra_spf_record"),
        ("acme.test", Answer("ok", ("v=spf1 a:relay.example.net ~all",)), "spf", "wrong_value"),
        ("acme.test", Answer("ok", ("V=SPF1 +A:Relay.Example.NET ip4:192.0.2.10 -all",)), "spf",
         "ok"),
        ("acme.test", Answer("ok", ("v=spf1" + " a" * 10 + " a:relay.example.net ip4:192.0.2.10",)),
         "spf", "spf_too_many_lookups"),
        ("acme.test", Answer("ok", ("v=spf1" + " a" * 8 + " a:relay.example.net ip4:192.0.2.10",)),
         "spf", "ok"),
        ("_dmarc.acme.test", Answer("nxdomain"), "dmarc", "missing"),
        ("_dmarc.acme.test", Answer("ok", ("v=DMARC1; p=none", "v=DMARC1; p=reject")), "dmarc",
         "dmarc_invalid"),
        ("_dmarc.acme.test", Answer("ok", ("v=DMARC1; p=sometimes",)), "dmarc", "dmarc_invalid"),
        ("_dmarc.acme.test", Answer("ok", ("v=DMARC1",)), "dmarc", "dmarc_invalid"),
        ("_dmarc.acme.test", Answer("ok", ("v=DMARC1; p=reject; rua=https://x",)), "dmarc",
         "dmarc_invalid"),
        ("_dmarc.acme.test", Answer("ok", ("v=DMARC1; p=quarantine; pct=50; adkim=s",)), "dmarc",
         "ok"),
    ],
)  # fmt: skip
def test_txt_answers(name: str, answer: Answer, purpose: str, status: str) -> None:
    assert _status(_with_txt(name, answer), purpose) == status


def test_cname_and_mx() -> None:
    wrong = Answers(txt=GOOD_TXT, cname={"bounces.acme.test": Answer("ok", ("x.test",))}, mx={})
    checks = {c.record.purpose: c for c in check_records(RECORDS, wrong)}
    assert checks["return_path"].status == "wrong_value"
    assert checks["return_path"].found == ("x.test",)
    assert checks["inbound_mx"].status == "lookup_failed"  # never looked up
    assert verdict(checks.values()) == "verified"  # neither is required
    missing = Answers(txt=GOOD_TXT, mx={"acme.test": Answer("nodata")})
    assert _status(missing, "inbound_mx") == "missing"
    assert _status(missing, "return_path") == "lookup_failed"


def test_spf_includes_are_counted_recursively_with_voids_and_loops() -> None:
    chain = {
        f"c{i}.test": Answer("ok", (f"v=spf1 include:c{i + 1}.test -all",)) for i in range(1, 10)
    }
    chain["c10.test"] = Answer("ok", ("v=spf1 -all",))
    assert spf_lookups("v=spf1 include:c1.test -all", chain) == (10, 0)
    assert spf_lookups("v=spf1 include:c1.test mx -all", chain)[0] == 11
    assert spf_lookups("v=spf1 include:c5.test mx -all", chain) == (7, 0)
    voids = {
        "v1.test": Answer("nxdomain"),
        "v2.test": Answer("nodata"),
        "v3.test": Answer("nodata"),
    }
    assert spf_lookups("v=spf1 include:v1.test include:v2.test -all", voids) == (2, 2)
    assert spf_lookups("v=spf1 include:v1.test include:v2.test include:v3.test", voids)[1] == 3
    loop = {
        "a.test": Answer("ok", ("v=spf1 include:b.test",)),
        "b.test": Answer("ok", ("v=spf1 include:a.test",)),
    }
    assert spf_lookups("v=spf1 include:a.test", loop)[0] > 10
    # A diamond is not a loop: both branches count.
    diamond = {
        "l.test": Answer("ok", ("v=spf1 include:d.test",)),
        "r.test": Answer("ok", ("v=spf1 include:d.test",)),
        "d.test": Answer("ok", ("v=spf1 a mx",)),
    }
    assert spf_lookups("v=spf1 include:l.test include:r.test", diamond) == (8, 0)
    assert spf_targets("v=spf1 include:A.test. include:%{d}.x redirect=b.test ip4:1.2.3.4") == [
        "a.test",
        "b.test",
    ]
    deep = _with_txt(
        "acme.test",
        Answer("ok", ("v=spf1 include:c1.test a:relay.example.net ip4:192.0.2.10 ~all",)),
        **chain,
    )
    assert _status(deep, "spf") == "spf_too_many_lookups"
    void = _with_txt(
        "acme.test",
        Answer(
            "ok",
            ("v=spf1 include:v1.test include:v2.test include:v3.test a:relay.example.net "
             "ip4:192.0.2.10 ~all",),
        ),
        **voids,
    )  # fmt: skip
    assert _status(void, "spf") == "spf_too_many_lookups"


def test_verdicts() -> None:
    timeout = _with_txt("acme.test", Answer("timeout"))
    assert verdict(check_records(RECORDS, timeout)) == "lookup_failed"
    both = _with_txt("acme.test", Answer("timeout"), **{"_dmarc.acme.test": Answer("nxdomain")})
    assert verdict(check_records(RECORDS, both)) == "not_verified"
    assert verdict(check_records(RECORDS, Answers())) == "lookup_failed"


def test_dmarc_problems() -> None:
    assert dmarc_problem("v=DMARC1; p=none; rua=mailto:a@b.test,mailto:c@d.test") is None
    assert dmarc_problem("p=none; v=DMARC1") is not None
    assert dmarc_problem("v=DMARC1; p=none; p=reject") is not None
    assert dmarc_problem("v=DMARC1; p=none; sp=x") is not None
    assert dmarc_problem("v=DMARC1; p=none; aspf=x") is not None
    assert dmarc_problem("v=DMARC1; p=none; pct=101") is not None
    assert dmarc_problem("v=DMARC1; p=none; junk") is not None


_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            SPF,
            "v=spf1 include:x.test include:y.test -all",
            "v=spf1 redirect=x.test",
            "v=spf1 include:acme.test",
            "v=DMARC1; p=none",
            f"v=DKIM1; p={KEY}",
            "v=spf1 include: include:%{i} a:/24 mx//0 exists:%{x}",
            "p=;;;=;v=",
        ]
    ),
    st.builds(lambda xs: "v=spf1 " + " ".join(xs), st.lists(st.text(max_size=20), max_size=15)),
)
_ANSWER = st.builds(
    Answer,
    st.sampled_from(["ok", "nxdomain", "nodata", "timeout", "error"]),
    st.lists(_TEXT, max_size=4).map(tuple),
)
_NAMES = st.sampled_from(
    ["acme.test", "sel1._domainkey.acme.test", "_dmarc.acme.test", "bounces.acme.test",
     "x.test", "y.test", "ACME.TEST.", ""]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    txt=st.dictionaries(_NAMES, _ANSWER, max_size=8),
    cname=st.dictionaries(_NAMES, _ANSWER, max_size=3),
    mx=st.dictionaries(_NAMES, _ANSWER, max_size=3),
    inbound=st.booleans(),
)
def test_any_answers_give_a_status_per_record(
    txt: dict[str, Answer], cname: dict[str, Answer], mx: dict[str, Answer], inbound: bool
) -> None:
    records = records_for("acme.test", KEYS, CONFIG, inbound=inbound)
    checks = check_records(records, Answers(txt=txt, cname=cname, mx=mx))
    assert [c.record for c in checks] == list(records)
    assert verdict(checks) in ("verified", "not_verified", "lookup_failed")
    for check in checks:
        assert len(check.found) <= 8
        assert all(len(value) <= 512 for value in check.found)


@settings(max_examples=200, deadline=None)
@given(record=_TEXT, txt=st.dictionaries(st.text(max_size=12), _ANSWER, max_size=6))
def test_spf_counting_is_total(record: str, txt: dict[str, Answer]) -> None:
    lookups, voids = spf_lookups(record, txt)
    assert lookups >= 0
    assert voids >= 0
    assert all(isinstance(t, str) for t in spf_targets(record))


def test_a_record_outside_the_table_is_checked_as_dkim() -> None:
    record = DnsRecord("dkim_retiring", "TXT", "old._domainkey.acme.test", f"p={KEY}", False)
    (check,) = check_records([record], Answers(txt={record.name: Answer("ok", (f"p={KEY}",))}))
    assert check.status == "ok"
