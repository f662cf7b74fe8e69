"""verify()/verify_many() against the real Postfix + postgrey lab, served by a real NSD."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import pytest
from lab.dnslab import DnsLab, free_port
from lab.maillab import MailLab
from lab.probers import lab_prober

from emailintel.dns import DnsResolver
from emailintel.errors import AddressError, ConfigError
from emailintel.models import Reason, RiskResult, Verdict
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts
from emailintel.verify import RetryWait, Validator, verify, verify_many


def make_prober(**overrides: Any) -> Prober:
    return lab_prober(**{"retry_schedule": (3.0,), **overrides})


@pytest.fixture
def validator(mail_dns: DnsLab) -> Validator:
    return Validator(resolver=DnsResolver([mail_dns.nameserver]))


async def collect(addresses: Iterable[str], **kwargs: Any) -> dict[str, RiskResult]:
    return {r.address: r async for r in verify_many(addresses, **kwargs)}


async def test_known_mailbox_is_accepted_over_starttls(validator: Validator) -> None:
    prober = make_prober()
    result = await verify("john.smith@company.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.VALID
    assert result.reasons[0] is Reason.SMTP_ACCEPTED
    smtp = result.smtp
    assert smtp is not None
    assert smtp.checked
    assert smtp.accepted
    assert smtp.tls is True  # STARTTLS against Postfix's self-signed certificate
    assert smtp.catch_all is False  # the random probe was refused
    assert smtp.mx_host == "mx.company.test"
    assert smtp.reply is not None
    assert smtp.reply.stage == "rcpt"
    assert smtp.reply.code == 250
    assert smtp.reply.enhanced_code == "2.1.5"
    assert "connect" in smtp.timings_ms
    assert "banner" in smtp.timings_ms
    assert "rcpt" in smtp.timings_ms


async def test_unknown_mailbox_is_invalid_with_the_raw_reply(validator: Validator) -> None:
    result = await verify("nobody.here@company.test", prober=make_prober(), validator=validator)
    assert result.verdict is Verdict.INVALID
    assert Reason.MAILBOX_NOT_FOUND in result.reasons
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert result.smtp.reply.code == 550
    assert result.smtp.reply.enhanced_code == "5.1.1"
    assert "User unknown" in result.smtp.reply.message


async def test_catch_all_domain_is_risky(validator: Validator) -> None:
    prober = make_prober()
    result = await verify("whoever.this.is@catchall.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.RISKY
    assert Reason.CATCH_ALL in result.reasons
    assert result.smtp is not None
    assert result.smtp.catch_all is True
    assert prober.cached_catch_all("catchall.test", "mx.catchall.test") is True


async def test_plain_session_when_starttls_is_off(validator: Validator) -> None:
    prober = make_prober(starttls="never")
    result = await verify("info@company.test", prober=prober, validator=validator)
    assert result.smtp is not None
    assert result.smtp.accepted
    assert result.smtp.tls is False


async def test_greylisting_single_call_is_unknown_with_retry_hint(
    validator: Validator, mail_lab: MailLab
) -> None:
    prober = make_prober(source_address=mail_lab.fresh_source())
    result = await verify("info@greylist.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert Reason.GREYLISTED in result.reasons
    assert result.smtp is not None
    assert result.smtp.greylisted is True
    assert result.smtp.retry_after is not None
    assert result.smtp.retry_after > 0
    assert result.smtp.reply is not None
    assert result.smtp.reply.code == 450


async def test_greylisting_batch_retries_until_accepted(
    validator: Validator, mail_lab: MailLab
) -> None:
    prober = make_prober(source_address=mail_lab.fresh_source(), retry_schedule=(1.0, 2.5, 3.0))
    results = await collect(
        ["info@greylist.test", "sales@greylist.test", "nobody.here@greylist.test"],
        prober=prober,
        validator=validator,
    )
    assert results["info@greylist.test"].verdict is Verdict.VALID
    assert results["sales@greylist.test"].verdict is Verdict.VALID
    assert results["nobody.here@greylist.test"].verdict is Verdict.INVALID


async def test_batch_yields_final_results_before_waiting_on_retries(
    validator: Validator, mail_lab: MailLab
) -> None:
    prober = make_prober(source_address=mail_lab.fresh_source(), retry_schedule=(3.0,))
    waits: list[RetryWait] = []
    seen: list[tuple[str, Verdict, int]] = []
    before = time.time()
    async for result in verify_many(
        ["info@greylist.test", "nobody.here@greylist.test"],
        prober=prober,
        validator=validator,
        on_retry_wait=waits.append,
    ):
        # How many waits had been announced when this result arrived.
        seen.append((result.address, result.verdict, len(waits)))
    # The refused mailbox came out while its domain-mate still waited for its retry.
    assert seen == [
        ("nobody.here@greylist.test", Verdict.INVALID, 1),
        ("info@greylist.test", Verdict.VALID, 2),
    ]
    start, end = waits
    assert (start.domain, start.waiting) == ("greylist.test", 1)
    assert start.retry_at is not None
    assert start.retry_at >= before + 3.0
    assert (end.domain, end.waiting, end.retry_at) == ("greylist.test", 0, None)


async def test_dead_mx_is_connect_failed(validator: Validator) -> None:
    result = await verify("info@deadmx.test", prober=make_prober(), validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert Reason.CONNECT_FAILED in result.reasons
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert result.smtp.reply.stage == "connect"


async def test_next_mx_by_preference_after_a_refused_one(validator: Validator) -> None:
    result = await verify("info@multi.test", prober=make_prober(), validator=validator)
    assert result.verdict is Verdict.VALID
    assert result.smtp is not None
    assert result.smtp.mx_host == "mx.company.test"


async def test_implicit_mx_probes_the_a_host(validator: Validator) -> None:
    result = await verify("info@nomx.test", prober=make_prober(), validator=validator)
    assert Reason.SMTP_ACCEPTED in result.reasons
    assert Reason.MX_FALLBACK_A in result.reasons
    assert result.smtp is not None
    assert result.smtp.mx_host == "nomx.test"


async def test_null_mx_is_never_contacted(validator: Validator) -> None:
    prober = make_prober()
    result = await verify("info@nullmx.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.INVALID
    assert Reason.NULL_MX in result.reasons
    assert prober.sessions_opened == 0
    assert result.smtp is not None
    assert result.smtp.checked is False


async def test_tarpit_banner_times_out(validator: Validator) -> None:
    prober = make_prober(timeouts=Timeouts(connect=2, banner=0.5, command=2))
    result = await verify("info@slow.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert Reason.TIMEOUT in result.reasons
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert result.smtp.reply.stage == "banner"


async def test_private_mx_is_refused_without_connecting(
    validator: Validator, mail_lab: MailLab
) -> None:
    source = mail_lab.fresh_source()
    prober = make_prober(allow_private_mx=False, source_address=source)
    result = await verify("john.smith@company.test", prober=prober, validator=validator)
    assert result.verdict is Verdict.UNKNOWN
    assert result.reasons[0] is Reason.MX_PRIVATE_ADDRESS
    assert prober.sessions_opened == 0
    assert source not in mail_lab.log_path.read_text(errors="replace")
    # The same prober configuration with the lab flag does reach Postfix from that source.
    allowed = make_prober(source_address=source)
    assert (await verify("john.smith@company.test", prober=allowed, validator=validator)).smtp
    assert source in mail_lab.log_path.read_text(errors="replace")


async def test_private_mx_refused_through_the_environment_flag(validator: Validator) -> None:
    env = {"EMAILINTEL_ALLOW_PRIVATE_MX": "0"}
    prober = make_prober(allow_private_mx=None, env=env)
    result = await verify("info@company.test", prober=prober, validator=validator)
    assert Reason.MX_PRIVATE_ADDRESS in result.reasons
    env_allowed = make_prober(allow_private_mx=None, env={"EMAILINTEL_ALLOW_PRIVATE_MX": "1"})
    result = await verify("info@company.test", prober=env_allowed, validator=validator)
    assert Reason.SMTP_ACCEPTED in result.reasons


async def test_failed_preflight_marks_every_result_port25_blocked(validator: Validator) -> None:
    dead = free_port("127.0.0.1")
    prober = make_prober(preflight_target=f"127.0.0.1:{dead}", preflight_timeout=2)
    addresses = ["info@company.test", "sales@company.test", "info@catchall.test"]
    results = await collect(addresses, prober=prober, validator=validator)
    assert set(results) == set(addresses)
    for result in results.values():
        assert result.verdict is Verdict.UNKNOWN
        assert result.reasons[0] is Reason.PORT25_BLOCKED
    assert prober.sessions_opened == 0


async def test_passing_preflight_probes_normally(validator: Validator, mail_lab: MailLab) -> None:
    prober = make_prober(preflight_target=f"{mail_lab.ip('main')}:25")
    results = await collect(["info@company.test"], prober=prober, validator=validator)
    assert results["info@company.test"].verdict is Verdict.VALID


async def test_batch_groups_a_domain_into_one_session(validator: Validator) -> None:
    prober = make_prober()
    users = ["john.smith", "jane.doe", "info", "sales", "nobody1", "nobody2"]
    results = await collect(
        [f"{u}@company.test" for u in users], prober=prober, validator=validator
    )
    assert prober.sessions_opened == 1
    for user in users:
        expected = Verdict.INVALID if user.startswith("nobody") else Verdict.VALID
        assert results[f"{user}@company.test"].verdict is expected


async def test_strict_server_limits_are_respected(validator: Validator, mail_lab: MailLab) -> None:
    # strict.test: 452 after 5 recipients, 421 after 4 errors; we reconnect before both.
    prober = make_prober(source_address=mail_lab.fresh_source(), max_rejections_per_connection=3)
    valid = [f"{u}@strict.test" for u in ("john.smith", "jane.doe", "info", "sales", "postmaster")]
    unknown = [f"ghost{i}@strict.test" for i in range(7)]
    results = await collect(valid + unknown, prober=prober, validator=validator)
    assert all(results[a].verdict is Verdict.VALID for a in valid)
    assert all(Reason.MAILBOX_NOT_FOUND in results[a].reasons for a in unknown)
    assert prober.sessions_opened >= 3


async def test_checkpoint_resumes_and_appends(validator: Validator, tmp_path: Any) -> None:
    checkpoint = tmp_path / "run.jsonl"
    first = await collect(["info@company.test"], validator=validator, prober=make_prober(),
                          checkpoint=checkpoint)  # fmt: skip
    assert set(first) == {"info@company.test"}
    checkpoint.write_text(checkpoint.read_text() + '{"address": "broken', encoding="utf-8")
    prober = make_prober()
    second = await collect(
        ["info@company.test", "nobody.here@company.test", "not an address"],
        validator=validator,
        prober=prober,
        checkpoint=checkpoint,
    )
    assert set(second) == {"nobody.here@company.test", "not an address"}
    assert second["not an address"].verdict is Verdict.INVALID
    lines = [line for line in checkpoint.read_text().splitlines() if line.endswith("}")]
    assert len(lines) == 3


async def test_identity_impersonating_the_target_is_refused(validator: Validator) -> None:
    prober = make_prober(helo="mx.company.test")
    with pytest.raises(ConfigError, match="probed domain or its MX"):
        await verify("info@company.test", prober=prober, validator=validator)
    assert prober.sessions_opened == 0
    forced = make_prober(helo="mx.company.test", force=True)
    result = await verify("info@company.test", prober=forced, validator=validator)
    assert Reason.SMTP_ACCEPTED in result.reasons


async def test_null_sender_probe(validator: Validator) -> None:
    prober = make_prober(mail_from=None, null_sender=True)
    assert prober.identity.mail_from == ""
    result = await verify("jane.doe@company.test", prober=prober, validator=validator)
    assert Reason.SMTP_ACCEPTED in result.reasons


def test_random_catch_all_addresses_look_like_names() -> None:
    from emailintel.smtp.prober import random_local_part

    for _ in range(50):
        assert re.fullmatch(r"[a-z]+[._]?[a-z]+\d{1,2}", random_local_part())


async def test_internationalised_local_part_is_probed_as_utf8(validator: Validator) -> None:
    result = await verify("jöhn@company.test", prober=make_prober(), validator=validator)
    assert result.verdict is Verdict.INVALID
    assert result.smtp is not None
    assert result.smtp.reply is not None
    assert result.smtp.reply.code == 550


async def test_mx_without_address_is_unresolvable_without_dialing(validator: Validator) -> None:
    prober = make_prober()
    result = await verify("info@badmx.test", prober=prober, validator=validator)
    assert (result.verdict, result.reasons[0]) == (Verdict.INVALID, Reason.MX_UNRESOLVABLE)
    assert prober.sessions_opened == 0


async def test_batch_without_retries_leaves_greylisting_unknown(
    validator: Validator, mail_lab: MailLab
) -> None:
    prober = make_prober(source_address=mail_lab.fresh_source())
    results = await collect(
        ["info@greylist.test"], prober=prober, validator=validator, retry_greylisted=False
    )
    assert results["info@greylist.test"].reasons[0] is Reason.GREYLISTED
    assert prober.sessions_opened == 1


async def test_probe_with_retries_directly(mail_dns: DnsLab, mail_lab: MailLab) -> None:
    resolver = DnsResolver([mail_dns.nameserver])
    dns = await resolver.lookup_mx("greylist.test", resolve_addresses=True)
    prober = make_prober(source_address=mail_lab.fresh_source(), retry_schedule=(1.0, 2.5, 3.0))
    facts = await prober.probe_with_retries("greylist.test", ["jane.doe@greylist.test"], dns)
    assert facts["jane.doe@greylist.test"].accepted is True
    assert prober.sessions_opened >= 2


# --- addresses the SMTP session could not send (hardening 11b/12) ---------------------------------

UNSENDABLE = ['"a>b"@company.test', '"<x>"@company.test', "\ud800@company.test"]


async def test_unsendable_address_is_answered_without_a_session(validator: Validator) -> None:
    prober = make_prober()
    for address in UNSENDABLE:
        result = await verify(address, prober=prober, validator=validator)
        assert (result.verdict, result.reasons) == (Verdict.INVALID, (Reason.SYNTAX_INVALID,))
        assert result.error
    assert prober.sessions_opened == 0


async def test_batch_with_unsendable_addresses_answers_every_address(validator: Validator) -> None:
    quoted = '"john smith"@company.test'  # valid quoted syntax: probed, and Postfix says 550
    wanted = [*UNSENDABLE, "john.smith@company.test", quoted]
    results = await collect(wanted, prober=make_prober(), validator=validator)
    assert set(results) == set(wanted)
    for address in UNSENDABLE:
        assert results[address].reasons == (Reason.SYNTAX_INVALID,)
    assert results["john.smith@company.test"].verdict is Verdict.VALID
    assert Reason.MAILBOX_NOT_FOUND in results[quoted].reasons
    smtp = results[quoted].smtp
    assert smtp is not None
    assert smtp.reply is not None
    assert smtp.reply.code == 550


@pytest.mark.parametrize("bad", [*UNSENDABLE, "a@company.test\r\nDATA", ""])
async def test_probe_refuses_unsendable_recipients_before_connecting(
    mail_dns: DnsLab, bad: str
) -> None:
    dns = await DnsResolver([mail_dns.nameserver]).lookup_mx("company.test", resolve_addresses=True)
    prober = make_prober()
    with pytest.raises(AddressError):
        await prober.probe("company.test", ["john.smith@company.test", bad], dns)
    with pytest.raises(AddressError):
        await prober.probe_many([("company.test", ["john.smith@company.test", bad], dns)])
    assert prober.sessions_opened == 0
