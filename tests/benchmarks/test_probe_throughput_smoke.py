"""The SMTP probe benchmark at tiny size: labs start, every runner answers, we match the truth."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from benchmarks.probe_throughput import (
    CLASSES,
    Labs,
    PeerError,
    Report,
    agrees,
    build_plan,
    format_latency_summary,
    format_report,
    latency_relay,
    main,
    our_class,
    run,
    run_latency,
    run_peer,
)
from emailintel.verify import Validator


@pytest.fixture(scope="module")
def report() -> Report:
    """The benchmark on its own labs (Postfix, NSD), started inline: its users are marked lab."""
    return run(20, 4, latency_sample=2, plain=False)


@pytest.mark.lab
def test_our_answers_agree_with_the_lab_for_every_class(report: Report) -> None:
    accuracy = report.accuracy()
    assert set(accuracy["ours"]) == set(CLASSES)
    for klass in CLASSES:
        agreeing, total = accuracy["ours"][klass]
        assert total > 0, f"the input has no {klass} address"
        assert agreeing == total, report.disagreements("ours")
    assert report.answers["ours"] == {c.address: c.truth for c in report.plan.cases}


@pytest.mark.lab
def test_peer_runners_reach_the_lab(report: Report) -> None:
    # Both libraries classify plain valid/invalid mailboxes right when their DNS patch works;
    # unpatched they would see NXDOMAIN everywhere and answer False.
    accuracy = report.accuracy()
    for peer in ("py3-validate-email", "deep-email-validator"):
        for klass in ("valid", "invalid"):
            agreeing, total = accuracy[peer][klass]
            assert agreeing == total, report.disagreements(peer)
    pyve = report.answers["py3-validate-email"]
    assert {pyve[c.address] for c in report.plan.cases if c.truth == "greylisted"} == {"unknown"}


@pytest.mark.lab
def test_rows_and_text_report(report: Report) -> None:
    names = [row.name for row in report.rows]
    assert any(n.startswith("py3-validate-email") for n in names)
    assert any(n.startswith("deep-email-validator") for n in names)
    tls_ceiling = next(r for r in report.rows if r.name.startswith("raw STARTTLS ceiling"))
    assert tls_ceiling.rcpts == len(report.plan.cases)
    assert "/ STARTTLS ceiling = " in format_report(report)
    ceiling = next(r for r in report.rows if r.name.startswith("raw ceiling"))
    assert ceiling.rcpts == len(report.plan.cases)  # one RCPT per address, no 421 retries
    assert ceiling.connections is not None
    assert ceiling.connections >= 1
    ours = next(r for r in report.rows if r.name == report.primary)
    assert ours.rcpts is not None
    # Every address got its own RCPT, except that a policy block ends asking at that domain.
    blocked = [c for c in report.plan.cases if c.truth == "blocked"]
    once_per_blocked_domain = len({c.domain for c in blocked})
    assert ours.rcpts >= len(report.plan.cases) - len(blocked) + once_per_blocked_domain
    assert len(ours.latencies_ms) == len(report.plan.cases)
    text = format_report(report)
    for klass in CLASSES:
        assert f"\n{klass:<11}" in text
    assert "100% agreement with the lab: 20/20 MET" in text


def test_plan_spreads_the_classes() -> None:
    plan = build_plan(2000, 200)
    truth = Counter(c.truth for c in plan.cases)
    assert len(plan.cases) == len({c.address for c in plan.cases}) == 2000
    assert len({c.domain for c in plan.cases}) == 200
    assert truth["catch-all"] == truth["blocked"] == 40
    assert truth["greylisted"] == 20
    assert truth["valid"] + truth["greylisted"] == truth["invalid"]  # half real, half unknown
    users = {d.name: set(d.users) for d in plan.domains}
    for case in plan.cases:
        local = case.address.split("@")[0]
        if case.truth in ("valid", "greylisted"):
            assert local in users[case.domain]
        elif case.truth == "invalid":
            assert local not in users[case.domain]
    assert build_plan(40, 4) == build_plan(40, 4)  # seeded


@pytest.mark.parametrize(("addresses", "domains"), [(20, 3), (7, 4)])
def test_plan_refuses_too_small_inputs(addresses: int, domains: int) -> None:
    with pytest.raises(ValueError, match="need at least"):
        build_plan(addresses, domains)


def test_agreement_rules() -> None:
    assert agrees("valid", "valid")
    assert not agrees("valid", "unknown")
    assert agrees("greylisted", "unknown")
    assert agrees("blocked", "unknown")
    assert not agrees("catch-all", "valid")
    assert not agrees("blocked", "invalid")


def test_unexpected_result_is_spelled_out() -> None:
    result = Validator(check_dns=False).validate_offline("anna.keller@example.com")
    assert our_class(result).startswith("other(")


def test_run_peer_failures_are_typed() -> None:
    with pytest.raises(PeerError, match="exited 3"):
        run_peer([sys.executable, "-c", "import sys; sys.exit(3)"], {}, 30)
    with pytest.raises(PeerError, match="no JSON"):
        run_peer([sys.executable, "-c", "print('hello')"], {}, 30)
    with pytest.raises(PeerError):
        run_peer(["/nonexistent/runner"], {}, 30)
    with pytest.raises(PeerError, match="timed out"):
        run_peer([sys.executable, "-c", "import time; time.sleep(5)"], {}, 0.5)
    answer = run_peer([sys.executable, "-c", "print('{\"ok\": 1}')"], {}, 30)
    assert answer["ok"] == 1
    assert isinstance(answer["cpu"], float)  # the runner's CPU time, added by run_peer


@pytest.fixture(scope="module")
def latency_reports() -> list[Report]:
    """Latency mode at tiny size: every contender through the relay at 20 ms, 3 connections."""
    return run_latency(20, 4, rtts_ms=(20.0,), connections=3, plain=False)


@pytest.mark.lab
def test_latency_mode_runs_everyone_through_the_relay_under_one_cap(
    latency_reports: list[Report],
) -> None:
    (report,) = latency_reports
    assert (report.rtt_ms, report.connections) == (20.0, 3)
    assert report.answers["ours"] == {c.address: c.truth for c in report.plan.cases}
    names = [row.name for row in report.rows]
    assert len(names) == 5  # ours, two peers, two ceilings
    for row in report.rows:
        # Every contender's connections went through the relay, never more than 3 at once.
        assert row.round_trips is not None
        assert row.round_trips > 0
        assert row.connections is not None
        assert row.connections > 0
        assert row.max_active is not None
        assert 1 <= row.max_active <= 3, row.name
        assert row.max_open is not None
        assert row.max_open >= row.max_active
    by_key = {row.answers_key: row for row in report.rows}
    peer = by_key["deep-email-validator"]
    assert peer.connections == len(report.plan.cases)  # one connection per address
    ours = by_key["ours"]
    assert ours.connections is not None
    assert ours.connections < len(report.plan.cases)  # connections carry many RCPTs
    assert ours.round_trips_per_address is not None
    assert peer.round_trips_per_address is not None
    assert ours.round_trips_per_address < peer.round_trips_per_address
    text = format_report(report)
    assert text.startswith("RTT 20 ms through the latency relay, at most 3 SMTP connections")
    assert "max active/open" in text
    assert ">= 10x the faster peer" in text
    summary = format_latency_summary(latency_reports)
    assert summary.count("| 20 ms |") == 5
    assert f"| {len(report.plan.cases)}/{len(report.plan.cases)} |" in summary


def test_latency_mode_refuses_no_connections() -> None:
    with pytest.raises(ValueError, match="connections"):
        run_latency(20, 4, connections=0)


def test_latency_relay_needs_relayed_labs() -> None:
    labs = Labs.__new__(Labs)
    labs.relay_routes = {}
    with pytest.raises(ValueError, match="relayed=False"), latency_relay(labs, 10):
        pass


@pytest.mark.parametrize("text", ["", "a,b", "-5", "50,-1"])
def test_bad_rtt_lists_are_refused(text: str) -> None:
    with pytest.raises(SystemExit):
        main(["--rtt", text])
