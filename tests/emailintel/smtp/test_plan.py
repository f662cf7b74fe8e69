"""The prober's decisions (plan.py) as tables, plus properties over their whole input space."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emailintel.models import SmtpReply
from emailintel.smtp import plan
from emailintel.smtp.plan import Limits, ReplyStep
from emailintel.smtp.proxies import SmtpProxyError
from emailintel.smtp.replies import ReplyKind
from emailintel.smtp.session import (
    SmtpConnectError,
    SmtpDisconnectedError,
    SmtpProtocolError,
    SmtpTimeoutError,
    SmtpTLSError,
)

K = ReplyKind
LIMITS = Limits(max_rejections=8, max_rcpt=50, max_reconnects=3)

# --- batch size within the error budget ----------------------------------------------------------

# (rejections, sent, pipelining, one_at_a_time, expected)
BATCHES = [
    (0, 0, True, False, 8),  # a fresh connection: the whole error budget
    (3, 10, True, False, 5),  # what is left of it
    (7, 10, True, False, 1),
    (8, 10, True, False, 0),  # budget spent: reconnect first
    (0, 45, True, False, 5),  # the recipient limit is nearer
    (0, 50, True, False, 0),
    (0, 0, False, False, 1),  # no PIPELINING: one at a time
    (0, 0, True, True, 1),  # find(): nothing may follow an acceptance
    (9, 0, True, False, 0),  # over budget (an RSET past the free ones counted too)
]


@pytest.mark.parametrize(("rejections", "sent", "pipelining", "one", "expected"), BATCHES)
def test_batch_size_table(
    rejections: int, sent: int, pipelining: bool, one: bool, expected: int
) -> None:
    got = plan.batch_size(
        LIMITS, rejections=rejections, sent=sent, pipelining=pipelining, one_at_a_time=one
    )
    assert got == expected


@given(
    max_rejections=st.integers(1, 30),
    max_rcpt=st.integers(1, 100),
    rejections=st.integers(0, 40),
    sent=st.integers(0, 120),
    pipelining=st.booleans(),
    one=st.booleans(),
)
def test_a_batch_never_crosses_the_budget(
    max_rejections: int, max_rcpt: int, rejections: int, sent: int, pipelining: bool, one: bool
) -> None:
    limits = Limits(max_rejections=max_rejections, max_rcpt=max_rcpt)
    size = plan.batch_size(
        limits, rejections=rejections, sent=sent, pipelining=pipelining, one_at_a_time=one
    )
    assert size >= 0
    # Even if every RCPT of the batch is refused, no limit is crossed.
    assert rejections + size <= max(rejections, max_rejections)
    assert sent + size <= max(sent, max_rcpt)
    assert (size == 0) == (rejections >= max_rejections or sent >= max_rcpt)
    if not pipelining or one:
        assert size <= 1


# (room, full batch, handshake round trips, pending, worth it)
WORTH = [
    (8, 8, 2, 100, True),  # a full batch
    (3, 8, 2, 100, True),  # 3 * 3 >= 8
    (2, 8, 2, 100, False),  # cheaper over a fresh connection
    (2, 8, 5, 100, True),  # ... unless its TLS handshake costs more
    (1, 8, 5, 100, False),
    (1, 8, 2, 1, True),  # the last one: a new connection would carry no more
    (2, 8, 2, 2, True),
    (0, 8, 2, 5, False),  # no room at all
    (1, 1, 2, 100, True),  # one at a time anyway
]


@pytest.mark.parametrize(("room", "full", "handshake", "pending", "worth"), WORTH)
def test_worth_a_batch_table(
    room: int, full: int, handshake: int, pending: int, worth: bool
) -> None:
    got = plan.worth_a_batch(room, full=full, handshake=handshake, pending=pending)
    assert got is worth


@given(st.integers(-2, 60), st.integers(1, 60), st.integers(1, 8), st.integers(0, 500))
def test_a_full_batch_or_the_last_one_is_always_worth_it(
    room: int, full: int, handshake: int, pending: int
) -> None:
    worth = plan.worth_a_batch(room, full=full, handshake=handshake, pending=pending)
    if room <= 0:
        assert not worth
    elif room >= full or pending <= room:
        assert worth


@pytest.mark.parametrize(("tls", "trips"), [(False, 2), (None, 2), (True, 5)])
def test_handshake_round_trips(tls: bool | None, trips: int) -> None:
    assert plan.handshake_round_trips(tls) == trips


@pytest.mark.parametrize(("before", "costs"), [(0, False), (3, False), (4, True), (9, True)])
def test_rset_costs_an_error_past_the_free_ones(before: int, costs: bool) -> None:
    assert plan.rset_costs_error(before) is costs


# --- when another connection pays off -----------------------------------------------------------

# (pending RCPTs, open connections, RCPTs one carries, limit, MX round trip, expected new ones)
CONNECTIONS = [
    (0, 0, 8, 4, 0.1, 0),  # nothing queued
    (5, 0, 8, 4, 0.1, 1),  # one carries it
    (8, 1, 8, 4, 0.1, 0),  # the open one carries it
    (9, 1, 8, 4, 0.1, 1),  # one more pays off
    (100, 1, 8, 4, 0.1, 3),  # up to the limit
    (100, 4, 8, 4, 0.1, 0),  # at the limit
    (100, 6, 8, 4, 0.1, 0),  # over it (limit lowered): never negative
    (3, 0, 0, 4, 0.1, 3),  # a zero carry is read as one RCPT per connection
    (100, 0, 8, 4, None, 1),  # round trip not measured yet: one connection first
    (100, 1, 8, 4, None, 0),
    (100, 1, 8, 4, 0.001, 0),  # loopback or LAN: one connection never waits long
    (100, 0, 8, 4, 0.001, 1),
    (100, 1, 8, 4, 0.010, 3),  # from 10 ms on, connections mostly wait: more pay off
]


@pytest.mark.parametrize(
    ("pending", "open_", "carry", "limit", "round_trip", "expected"), CONNECTIONS
)
def test_connections_wanted_table(
    pending: int, open_: int, carry: int, limit: int, round_trip: float | None, expected: int
) -> None:
    got = plan.connections_wanted(pending, open_, carry, limit, round_trip=round_trip)
    assert got == expected


@given(
    pending=st.integers(-5, 10_000),
    open_=st.integers(0, 100),
    carry=st.integers(0, 100),
    limit=st.integers(1, 64),
    round_trip=st.none() | st.floats(min_value=0, max_value=2),
)
def test_connections_stay_within_the_limit_and_open_only_for_a_surplus(
    pending: int, open_: int, carry: int, limit: int, round_trip: float | None
) -> None:
    more = plan.connections_wanted(pending, open_, carry, limit, round_trip=round_trip)
    assert more >= 0
    if more:
        assert open_ + more <= limit
        assert pending > open_ * max(1, carry)  # the open ones would not carry the queue
    if round_trip is None or round_trip < plan.PARALLEL_FROM:
        assert open_ + more <= max(open_, 1)  # short or unknown round trips: one connection


# (max_rejections, max_rcpt, rejected, sent, expected RCPTs a fresh connection carries)
CARRY = [
    (8, 50, 0, 0, 16),  # before any reply: one in two refused
    (8, 50, 50, 100, 16),
    (8, 50, 98, 98, 8),  # everything refused: one error budget
    (8, 50, 0, 98, 50),  # nothing refused: the recipient limit
    (8, 5, 0, 0, 5),  # the recipient limit is lower than the budget
    (9, 50, 9, 36, 34),
]


@pytest.mark.parametrize(("max_rej", "max_rcpt", "rejected", "sent", "expected"), CARRY)
def test_connection_carry_table(
    max_rej: int, max_rcpt: int, rejected: int, sent: int, expected: int
) -> None:
    limits = Limits(max_rejections=max_rej, max_rcpt=max_rcpt)
    assert plan.connection_carry(limits, rejected=rejected, sent=sent) == expected


@given(st.integers(1, 30), st.integers(1, 100), st.integers(0, 1000), st.integers(0, 1000))
def test_connection_carry_is_between_one_batch_and_the_recipient_limit(
    max_rej: int, max_rcpt: int, rejected: int, extra: int
) -> None:
    limits = Limits(max_rejections=max_rej, max_rcpt=max_rcpt)
    carry = plan.connection_carry(limits, rejected=rejected, sent=rejected + extra)
    assert min(max_rej, max_rcpt) <= carry <= max(max_rcpt, min(max_rej, max_rcpt))


@pytest.mark.parametrize(
    ("address_deadline", "command", "count", "expected"),
    [(120.0, 10.0, 1, 120.0), (120.0, 10.0, 5, 160.0), (0.3, 3.0, 0, 0.3)],
)
def test_deadline_grows_with_the_addresses(
    address_deadline: float, command: float, count: int, expected: float
) -> None:
    assert plan.deadline(address_deadline, command, count) == expected


# --- what an RCPT reply means -------------------------------------------------------------------


def rcpt(code: int | None, message: str) -> SmtpReply:
    return SmtpReply(stage="rcpt", code=code, message=message)


# (code, message, tx_sent, connected, reconnects, expected step: facts flag or None + flags)
# fmt: off
REPLIES: list[tuple[int | None, str, int, bool, int, str | None, dict[str, bool]]] = [
    (250, "2.1.5 Ok", 1, True, 0, "accepted", {}),
    (550, "5.1.1 <x@y.test>: Recipient address rejected: User unknown", 1, True, 0,
     "mailbox_not_found", {"rejection": True, "not_catch_all": True}),
    (552, "5.2.2 Mailbox full", 1, True, 0, "mailbox_full", {"rejection": True}),
    (554, "5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
     1, True, 0, "blocked", {"rejection": True, "stop_domain": True, "backoff": True}),
    (450, "4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/y.test.html", 1, True, 0,
     "greylisted", {"rejection": True, "one_at_a_time": True}),
    (451, "4.3.0 Temporary local problem", 1, True, 0,
     "temp_failure", {"rejection": True, "one_at_a_time": True}),
    # 452 too many recipients: later in a transaction, reconnect and go on (no reconnect spent)
    (452, "4.5.3 Error: too many recipients", 6, True, 0, None, {"reconnect": True}),
    # ... as the first RCPT of a transaction it is the answer (no loop)
    (452, "4.5.3 Error: too many recipients", 1, True, 0,
     "temp_failure", {"rejection": True, "one_at_a_time": True}),
    # ... and when the server hung up with it, a reconnect is spent
    (452, "4.5.3 Error: too many recipients", 3, False, 0, None,
     {"reconnect": True, "count_reconnect": True}),
    # 421: reconnect while reconnects last (each spends one), then it is the answer
    (421, "4.7.0 mx.strict.test Error: too many errors", 1, False, 0, None,
     {"reconnect": True, "count_reconnect": True, "backoff": True}),
    (421, "4.7.0 mx.strict.test Error: too many errors", 4, False, 2, None,
     {"reconnect": True, "count_reconnect": True, "backoff": True}),
    (421, "4.7.0 mx.strict.test Error: too many errors", 1, False, 3, "temp_failure",
     {"count_reconnect": True, "rejection": True, "backoff": True, "one_at_a_time": True}),
    (550, "5.7.1 Relaying denied", 1, True, 0, "blocked",
     {"rejection": True, "stop_domain": True, "backoff": True}),
    (553, "5.5.0 syntax error", 1, True, 0, "protocol_error", {"rejection": True}),
    (None, "garbage", 1, True, 0, "protocol_error", {"rejection": True}),
]
# fmt: on

FLAGS = (
    "reconnect",
    "count_reconnect",
    "rejection",
    "backoff",
    "stop_domain",
    "one_at_a_time",
    "not_catch_all",
)


@pytest.mark.parametrize(
    ("code", "message", "tx_sent", "connected", "reconnects", "fact", "flags"), REPLIES
)
def test_rcpt_reply_table(
    code: int | None,
    message: str,
    tx_sent: int,
    connected: bool,
    reconnects: int,
    fact: str | None,
    flags: dict[str, bool],
) -> None:
    step = plan.read_rcpt_reply(
        rcpt(code, message),
        mx_host="mx.y.test",
        tls=True,
        tx_sent=tx_sent,
        connected=connected,
        reconnects=reconnects,
        max_reconnects=3,
    )
    if fact is None:
        assert step.facts is None
    else:
        assert step.facts is not None
        assert getattr(step.facts, fact) is True
        assert (step.facts.mx_host, step.facts.tls, step.facts.checked) == ("mx.y.test", True, True)
    assert {flag: getattr(step, flag) for flag in FLAGS} == {f: flags.get(f, False) for f in FLAGS}


_codes = st.none() | st.integers(200, 599)
_texts = st.sampled_from(
    ["Ok", "User unknown", "too many recipients", "Greylisted", "blocked", "Mailbox full", ""]
) | st.text(max_size=60)


@given(
    code=_codes,
    message=_texts,
    tx_sent=st.integers(1, 60),
    connected=st.booleans(),
    reconnects=st.integers(0, 6),
    max_reconnects=st.integers(0, 5),
)
def test_rcpt_reply_properties(
    code: int | None,
    message: str,
    tx_sent: int,
    connected: bool,
    reconnects: int,
    max_reconnects: int,
) -> None:
    step = plan.read_rcpt_reply(
        rcpt(code, message),
        mx_host="mx.y.test",
        tls=None,
        tx_sent=tx_sent,
        connected=connected,
        reconnects=reconnects,
        max_reconnects=max_reconnects,
    )
    assert isinstance(step, ReplyStep)
    if step.facts is None:
        # Unanswered only to reconnect, and only while reconnects last.
        assert step.reconnect
        assert reconnects + step.count_reconnect <= max_reconnects
        assert code == 421 or tx_sent > 1
    else:
        assert step.facts.accepted is not True or not step.rejection
        assert step.facts.accepted is True or step.rejection
        if step.stop_domain:
            assert step.facts.blocked is True
        if step.not_catch_all:
            assert step.facts.mailbox_not_found is True
        assert not step.reconnect
    if code is not None and code < 400:
        assert step.facts is not None
        assert step.facts.accepted is True


# --- session refusals and failures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "code", "reconnects", "expected"),
    [
        ("banner", 421, 0, "next_mx"),  # a 4xx banner: the next MX may take us
        ("banner", 450, 3, "next_mx"),
        ("banner", 554, 0, "give_up"),  # 5xx banner: refused
        ("banner", None, 0, "next_mx"),
        ("ehlo", 421, 0, "reconnect"),
        ("ehlo", 421, 3, "give_up"),  # reconnects used up
        ("mail", 421, 2, "reconnect"),
        ("mail", 553, 0, "give_up"),  # our sender refused
        ("starttls", 454, 0, "give_up"),
    ],
)
def test_refusal_table(stage: str, code: int | None, reconnects: int, expected: str) -> None:
    reply = SmtpReply(stage=stage, code=code, message="x")  # type: ignore[arg-type]
    assert plan.on_refusal(reply, reconnects=reconnects, max_reconnects=3) == expected


@pytest.mark.parametrize(
    ("stage", "code", "expected"),
    [
        ("banner", 421, "fewer"),  # "too many connections from you": the open ones carry on
        ("banner", 450, "fewer"),
        ("banner", 554, "give_up"),  # refused outright, whatever else is open
        ("ehlo", 421, "reconnect"),
    ],
)
def test_refusal_while_other_connections_are_open(stage: str, code: int, expected: str) -> None:
    reply = SmtpReply(stage=stage, code=code, message="x")  # type: ignore[arg-type]
    step = plan.on_refusal(reply, reconnects=0, max_reconnects=3, others_open=2)
    assert step == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (SmtpConnectError("connect", "refused"), "next_mx"),
        (SmtpTimeoutError("banner", "slow"), "next_mx"),
        (SmtpDisconnectedError("banner", "gone"), "next_mx"),
        (SmtpProtocolError("ehlo", "garbage"), "next_mx"),
        (SmtpTLSError("starttls", "bad cert"), "give_up"),  # ours: every MX fails alike
        (SmtpProxyError("connect", "proxy down"), "give_up"),
    ],
)
def test_open_failure_table(exc: SmtpConnectError, expected: str) -> None:
    assert plan.on_open_failure(exc) == expected
    # With other connections open, an extra one failing only means: no more than those.
    assert plan.on_open_failure(exc, others_open=1) == "fewer"


@pytest.mark.parametrize(
    ("exc", "flag", "stage"),
    [
        (SmtpConnectError("connect", "refused"), "connect_failed", "connect"),
        (SmtpTimeoutError("rcpt", "slow"), "timed_out", "rcpt"),
        (TimeoutError("overall deadline of 3 s exceeded"), "timed_out", "connect"),
        (SmtpTLSError("starttls", "bad"), "tls_error", "starttls"),
        (SmtpProxyError("connect", "down"), "proxy_error", "connect"),
        (SmtpDisconnectedError("banner", "gone"), "connect_failed", "banner"),
        (SmtpDisconnectedError("rcpt", "gone"), "temp_failure", "rcpt"),
        (SmtpProtocolError("ehlo", "garbage"), "protocol_error", "ehlo"),
        (RuntimeError("anything else"), "protocol_error", "connect"),
    ],
)
def test_failure_facts_table(exc: BaseException, flag: str, stage: str) -> None:
    facts = plan.failure_facts(exc, "mx.y.test")
    assert getattr(facts, flag) is True
    assert facts.reply is not None
    assert (facts.reply.stage, facts.reply.code) == (stage, None)
    assert facts.checked is True


def test_gave_up_is_a_temporary_failure_without_a_reply() -> None:
    facts = plan.gave_up("mx.y.test")
    assert (facts.temp_failure, facts.reply, facts.mx_host) == (True, None, "mx.y.test")


# --- catch-all ----------------------------------------------------------------------------------

# (cached, skip, accepted_here, real_done, probed, due)
CATCH_ALL = [
    (None, False, True, True, False, True),
    (None, False, False, True, False, False),  # nothing accepted: a random probe proves nothing
    (None, False, True, False, False, False),  # real RCPTs still to come: never before them
    (None, False, True, True, True, False),  # once
    (True, False, True, True, False, False),  # cached
    (False, False, True, True, False, False),
    (None, True, True, True, False, False),  # accept-all provider
]


@pytest.mark.parametrize(("cached", "skip", "accepted", "real_done", "probed", "due"), CATCH_ALL)
def test_catch_all_due_table(
    cached: bool | None, skip: bool, accepted: bool, real_done: bool, probed: bool, due: bool
) -> None:
    got = plan.catch_all_due(
        cached=cached, skip=skip, accepted_here=accepted, real_done=real_done, probed=probed
    )
    assert got is due


@pytest.mark.parametrize(
    ("kinds", "verdict"),
    [
        ([K.ACCEPTED], True),
        ([K.MAILBOX_NOT_FOUND, K.ACCEPTED], True),
        ([K.MAILBOX_NOT_FOUND], False),
        ([K.MAILBOX_NOT_FOUND, K.MAILBOX_NOT_FOUND], False),
        ([K.MAILBOX_NOT_FOUND, None], None),  # one probe cut off
        ([K.GREYLISTED], None),
        ([K.BLOCKED], None),
        ([], None),
    ],
)
def test_catch_all_verdict_table(kinds: list[ReplyKind | None], verdict: bool | None) -> None:
    assert plan.catch_all_verdict(kinds) is verdict


@given(st.lists(st.none() | st.sampled_from(list(ReplyKind)), max_size=5))
def test_catch_all_verdict_properties(kinds: list[ReplyKind | None]) -> None:
    verdict = plan.catch_all_verdict(kinds)
    assert (verdict is True) == (K.ACCEPTED in kinds)
    if verdict is False:
        assert kinds
        assert all(kind is K.MAILBOX_NOT_FOUND for kind in kinds)


@pytest.mark.parametrize(
    ("answered", "grew", "stalled"), [(0, False, True), (0, True, False), (2, False, False)]
)
def test_a_connection_without_progress_stalls(answered: int, grew: bool, stalled: bool) -> None:
    assert plan.stalled(answered=answered, reconnects_grew=grew) is stalled
