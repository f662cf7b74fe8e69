"""Address parsing: email-validator semantics, the injection guard, limits and canonical forms."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from emailintel import _fastsyntax
from emailintel.address import (
    MAX_ADDRESS_OCTETS,
    MAX_LOCAL_OCTETS,
    MAX_RAW_CHARS,
    ParsedAddress,
    canonical_mailbox,
    normalize,
    parse_address,
    parse_fast,
    parse_guarded,
    strip_subaddress,
)
from emailintel.errors import AddressError, InjectionError
from emailintel.smtp.session import encode_path

# Characters that exercise every branch of the grammar: quotes, escapes, dots, IDN, brackets.
EMAILISH = st.text(
    alphabet=st.sampled_from([*'abcXYZ019.-_+@"\\ []:<>üßé\u0301ＡｂΩ한xn', "\r", "\n", "\x00"]),
    max_size=40,
)
ATOM = st.text(
    alphabet=st.sampled_from(list("abcdefxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~")),
    min_size=1,
    max_size=12,
)
LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
TLD = st.from_regex(r"[a-zA-Z0-9-]{0,4}[a-zA-Z]", fullmatch=True)
SIMPLE_ADDRESS = st.builds(
    lambda atoms, labels, tld: ".".join(atoms) + "@" + ".".join([*labels, tld]),
    st.lists(ATOM, min_size=1, max_size=3),
    st.lists(LABEL, min_size=1, max_size=3),
    TLD,
)
INTL_ATOM = st.text(
    alphabet=st.sampled_from(
        [
            *"abzAZ09+-_",
            "ü",
            "é",
            "ß",
            "\u0301",
            "\u212a",
            "한",
            "Ω",
            "\u200b",
            "\u00a0",
            "\u2028",
            "\U0001f600",
            "\ufb01",
        ]
    ),
    min_size=1,
    max_size=10,
)
INTL_ADDRESS = st.builds(
    lambda atoms, labels, tld: ".".join(atoms) + "@" + ".".join([*labels, tld]),
    st.lists(INTL_ATOM, min_size=1, max_size=3),
    st.lists(LABEL, min_size=1, max_size=2),
    TLD,
)
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udcff", "\udfff"]
INJECTED = ["\r", "\n", "\r\n", "\x00", "\x1b", "\t", "\x7f", "\x85", "\u2028", "\u2029", "<", ">"]


def _full_path(raw: str) -> ParsedAddress:
    """What parse_address returns when email-validator does all the work."""
    full = validate_email(raw, check_deliverability=False, test_environment=True)
    return ParsedAddress(
        original=raw,
        normalized=full.normalized,
        local_part=full.local_part,
        domain=full.domain,
        ascii_domain=full.ascii_domain,
        ascii_email=full.ascii_email,
        smtputf8=full.smtputf8,
    )


def _accepted(raw: str) -> ParsedAddress | None:
    try:
        return parse_address(raw)
    except AddressError:
        return None


class TestValidAddresses:
    def test_ascii_domain_is_lower_cased_local_part_kept(self) -> None:
        parsed = parse_address("  John.Smith@Example.COM \u3000")
        assert parsed.normalized == "John.Smith@example.com"
        assert parsed.local_part == "John.Smith"
        assert parsed.domain == parsed.ascii_domain == "example.com"
        assert parsed.ascii_email == "John.Smith@example.com"
        assert parsed.smtputf8 is False
        assert parsed.original == "  John.Smith@Example.COM \u3000"

    def test_idn_domain_and_utf8_local_part(self) -> None:
        parsed = parse_address("josé@Bücher.de")
        assert parsed.domain == "bücher.de"
        assert parsed.ascii_domain == "xn--bcher-kva.de"
        assert parsed.smtputf8 is True
        assert parsed.ascii_email is None
        assert parsed.normalized == "josé@bücher.de"

    def test_punycode_input_comes_back_in_unicode(self) -> None:
        parsed = parse_address("anna@XN--BCHER-KVA.de")
        assert parsed.domain == "bücher.de"
        assert parsed.ascii_email == "anna@xn--bcher-kva.de"
        assert parsed.smtputf8 is False

    def test_local_part_is_nfc_normalised(self) -> None:
        parsed = parse_address("jose\u0301@example.com")
        assert parsed.local_part == "jos\u00e9"
        assert unicodedata.is_normalized("NFC", parsed.normalized)

    def test_quoted_local_part_kept_when_needed(self) -> None:
        parsed = parse_address('"john doe"@example.com')
        assert parsed.local_part == '"john doe"'
        assert parsed.normalized == '"john doe"@example.com'

    def test_needless_quotes_are_dropped(self) -> None:
        assert parse_address('"john"@example.com').normalized == "john@example.com"

    def test_other_quoted_specials_are_data(self) -> None:
        assert parse_address('"a b@c"@example.com').local_part == '"a b@c"'
        assert parse_address('"a\\"b"@example.com').local_part == '"a\\"b"'

    def test_rfc2142_mailbox_is_case_folded(self) -> None:
        assert parse_address("PostMaster@Example.com").local_part == "postmaster"

    def test_domain_literal_when_allowed(self) -> None:
        parsed = parse_address("a@[192.0.2.1]", allow_domain_literal=True)
        assert parsed.domain == parsed.ascii_domain == "[192.0.2.1]"

    def test_test_tld_accepted_for_labs(self) -> None:
        assert parse_address("info@acme.test").domain == "acme.test"

    def test_model_is_frozen(self) -> None:
        parsed = parse_address("a@example.com")
        with pytest.raises(ValidationError):
            parsed.domain = "evil.com"  # type: ignore[misc]


class TestInvalidAddresses:
    @pytest.mark.parametrize(
        ("raw", "code"),
        [
            ("", "empty"),
            ("   ", "empty"),
            ("john.example.com", "missing_at_sign"),
            ("john@localhost", "domain_invalid"),
            ("john@-example.com", "domain_invalid"),
            ("john@example.123", "domain_invalid"),
            ("john@exa_mple.com", "domain_invalid"),
            ("john..smith@example.com", "syntax_invalid"),
            ("john smith@example.com", "syntax_invalid"),
            ("@example.com", "syntax_invalid"),
            ("john@", "domain_invalid"),
            ("john@example.invalid", "special_use_domain"),
            ("john@host.localhost", "special_use_domain"),
            ("a@[192.0.2.1]", "domain_literal_not_allowed"),
        ],
    )
    def test_error_codes(self, raw: str, code: str) -> None:
        with pytest.raises(AddressError) as info:
            parse_address(raw)
        assert not isinstance(info.value, InjectionError)
        assert info.value.code == code
        assert str(info.value)

    def test_smtputf8_refused_when_disallowed(self) -> None:
        with pytest.raises(AddressError) as info:
            parse_address("josé@example.com", allow_smtputf8=False)
        assert info.value.code == "smtputf8_not_allowed"

    def test_quoted_local_refused_when_disallowed(self) -> None:
        with pytest.raises(AddressError) as info:
            parse_address('"john doe"@example.com', allow_quoted_local=False)
        assert info.value.code == "quoted_local_not_allowed"

    def test_test_tld_refused_when_disallowed(self) -> None:
        with pytest.raises(AddressError) as info:
            parse_address("info@acme.test", allow_test_tld=False)
        assert info.value.code == "special_use_domain"

    @pytest.mark.parametrize("raw", [b"a@example.com", None, ["a@example.com"]])
    def test_non_string_is_a_typed_error(self, raw: object) -> None:
        with pytest.raises(AddressError) as info:
            parse_address(raw)  # type: ignore[arg-type]
        assert info.value.code == "not_a_string"
        with pytest.raises(AddressError):
            normalize(raw)  # type: ignore[arg-type]


class TestLoneSurrogates:
    """Lone surrogates (e.g. a non-UTF-8 argv byte under surrogateescape) are not text at all."""

    @pytest.mark.parametrize(
        "raw",
        [
            "\ud800@example.com",
            "\udcffjohn@acme.io",  # b"\xff" + "john@acme.io" decoded with surrogateescape
            "john@\udcff.example.com",
            "john@exam\udfffple.com",
            '"a\ud800b"@example.com',
            "jo\udce9@example.com",
        ],
    )
    def test_is_a_syntax_error(self, raw: str) -> None:
        with pytest.raises(AddressError) as info:
            parse_address(raw)
        assert info.value.code == "syntax_invalid"
        assert "surrogate" in str(info.value)
        with pytest.raises(AddressError):
            normalize(raw)
        with pytest.raises(AddressError):
            parse_fast(raw)

    @given(
        st.one_of(EMAILISH, SIMPLE_ADDRESS, INTL_ADDRESS),
        st.sampled_from(SURROGATES),
        st.integers(0),
    )
    def test_anywhere_in_any_address(self, address: str, bad: str, where: int) -> None:
        pos = where % (len(address) + 1)
        with pytest.raises(AddressError):
            parse_address(address[:pos] + bad + address[pos:])


class TestInjection:
    @pytest.mark.parametrize(
        "raw",
        [
            "a@b.com\r\nRCPT TO:<x@y.com>",
            "a@b.com\nDATA",
            "a@b.com\r",
            "a\x00@b.com",
            "a@b.com\x00",
            "<a@b.com>",
            "a@b.com>",
            "a<@b.com",
            "John <a@b.com>",
            '"x"<a@b.com>',
            '"unterminated<@b.com',
            "a@b.com\x1b[2J",
            "\ta@b.com",
            "a@b.com\x7f",
            "a@b.com\x85QUIT",
            "a@b.com\u2028QUIT",
            "a\\\rRCPT@b.com",  # backslash then CR: must not slip through the ASCII fast path
        ],
    )
    def test_injection_forms(self, raw: str) -> None:
        with pytest.raises(InjectionError) as info:
            parse_address(raw)
        assert info.value.code == "injection"

    @pytest.mark.parametrize(
        "raw", ['"a>b"@example.test', '"a<b>c"@example.com', '"a\\"<b"@example.com', '"<>"@x.com']
    )
    def test_angle_bracket_inside_quotes_is_refused_too(self, raw: str) -> None:
        # RFC 5321 allows it in a quoted string, but the SMTP session never sends it (a naive
        # server would end the path there), so it is refused here, not mid-session.
        with pytest.raises(InjectionError, match="angle bracket"):
            parse_address(raw)

    def test_raw_input_over_limit(self) -> None:
        with pytest.raises(InjectionError, match="too long"):
            parse_address("a@example.com" + " " * MAX_RAW_CHARS)

    def test_local_part_over_64_octets(self) -> None:
        parse_address("a" * MAX_LOCAL_OCTETS + "@example.com")
        with pytest.raises(InjectionError, match="local part"):
            parse_address("a" * (MAX_LOCAL_OCTETS + 1) + "@example.com")

    def test_utf8_local_part_counted_in_octets(self) -> None:
        with pytest.raises(InjectionError, match="local part"):
            parse_address("é" * 33 + "@example.com")

    def test_address_over_254_octets(self) -> None:
        domain = ".".join(["d" * 60] * 4) + ".com"
        fits = "a" * (MAX_ADDRESS_OCTETS - len(domain) - 1) + "@" + domain
        assert len(parse_address(fits).normalized) == MAX_ADDRESS_OCTETS
        with pytest.raises(InjectionError, match="254"):
            parse_address("a" + fits)

    def test_idna_expansion_over_254_octets(self) -> None:
        domain = ".".join(["a" * 50 + "ü"] * 4) + ".de"
        address = "a" * 20 + "@" + domain
        assert len(address.encode("utf-8")) < MAX_ADDRESS_OCTETS
        with pytest.raises(InjectionError, match="IDNA"):
            parse_address(address)

    @given(SIMPLE_ADDRESS, st.sampled_from(INJECTED), st.integers(min_value=0))
    def test_any_injected_character_is_caught(self, address: str, bad: str, where: int) -> None:
        assume(_accepted(address) is not None)
        pos = where % (len(address) + 1)
        with pytest.raises(InjectionError):
            parse_address(address[:pos] + bad + address[pos:])


QUOTED = st.builds(
    '"{}"@{}'.format,
    st.text(
        alphabet=st.sampled_from(
            [*'ab <>"\\@.', "\t", "\r", "\n", "\x00", "\x7f", "\x85", "ü", "\u2028", "\ud800"]
        ),
        max_size=12,
    ),
    st.sampled_from(["example.test", "Example.COM", "bücher.de", "xn--bcher-kva.de"]),
)


class TestSendable:
    """Whatever parse_address accepts, the SMTP session's path encoder accepts too."""

    @given(
        st.one_of(
            st.text(st.characters(exclude_categories=()), max_size=80),
            EMAILISH,
            QUOTED,
            SIMPLE_ADDRESS,
            INTL_ADDRESS,
        )
    )
    def test_parsed_addresses_can_be_sent(self, raw: str) -> None:
        parsed = _accepted(raw)
        if parsed is None:
            return
        path = encode_path(parsed.smtp_address, "recipient")
        assert path == parsed.smtp_address.encode("utf-8")
        encode_path(parsed.normalized, "recipient")

    def test_smtp_address_uses_the_ascii_domain(self) -> None:
        assert parse_address("a@Bücher.de").smtp_address == "a@xn--bcher-kva.de"
        assert parse_address("jörg@Bücher.de").smtp_address == "jörg@xn--bcher-kva.de"
        assert parse_address('"a b"@example.test').smtp_address == '"a b"@example.test'


class TestProperties:
    @given(st.text(max_size=300))
    def test_arbitrary_text_raises_only_address_errors(self, raw: str) -> None:
        _accepted(raw)

    @given(EMAILISH)
    def test_emailish_text_raises_only_address_errors(self, raw: str) -> None:
        _accepted(raw)

    @given(st.one_of(EMAILISH, SIMPLE_ADDRESS, st.text(max_size=60)))
    def test_normalize_is_idempotent(self, raw: str) -> None:
        parsed = _accepted(raw)
        assume(parsed is not None)
        assert parsed is not None
        once = normalize(raw)
        assert once == parsed.normalized
        assert normalize(once) == once
        again = parse_address(once)
        assert (again.local_part, again.domain, again.ascii_domain) == (
            parsed.local_part,
            parsed.domain,
            parsed.ascii_domain,
        )

    @given(st.one_of(SIMPLE_ADDRESS, INTL_ADDRESS, EMAILISH, st.text(max_size=40)), st.booleans())
    def test_fast_path_agrees_with_email_validator(self, raw: str, smtputf8: bool) -> None:
        text = raw.strip()
        fast = _fastsyntax.parse_simple(text, allow_test_tld=True, allow_smtputf8=smtputf8)
        try:
            full = validate_email(
                text,
                check_deliverability=False,
                allow_quoted_local=True,
                allow_smtputf8=smtputf8,
                test_environment=True,
            )
        except EmailNotValidError:
            assert fast is None
            return
        if fast is not None:
            assert fast == (full.local_part, full.domain, full.smtputf8)
            assert full.ascii_domain == full.domain
            expected_ascii = (
                f"{fast.local_part}@{fast.domain}" if fast.local_part.isascii() else None
            )
            assert full.ascii_email == expected_ascii

    @pytest.mark.parametrize("raw", ["a\\ b@x.com", "a\\<b@x.com", "a\\\x00@x.com"])
    def test_ascii_fast_path_refuses_backslashes(self, raw: str) -> None:
        assert _fastsyntax.parse_ascii(raw, allow_test_tld=True) is None
        with pytest.raises(AddressError):
            parse_address(raw)

    def test_ascii_fast_path_takes_dotted_local_parts(self) -> None:
        assert _fastsyntax.parse_ascii("John.Smith@Acme.IO", allow_test_tld=True) == (
            "John.Smith",
            "acme.io",
            False,
        )

    @given(st.one_of(SIMPLE_ADDRESS, INTL_ADDRESS, EMAILISH, st.text(max_size=40)), st.booleans())
    def test_ascii_fast_path_agrees_with_simple_path(self, raw: str, test_tld: bool) -> None:
        fast = _fastsyntax.parse_ascii(raw, allow_test_tld=test_tld)
        if fast is not None:
            assert raw.isascii()
            assert raw == raw.strip()
            assert fast == _fastsyntax.parse_simple(raw, allow_test_tld=test_tld)

    @pytest.mark.parametrize(
        "raw", ["Jürgen.Müller@Company.DE", "\u212aelvin@x.com", "jose\u0301@x.com", "NOC@x.com"]
    )
    def test_fast_path_examples(self, raw: str) -> None:
        assert _fastsyntax.parse_simple(raw, allow_test_tld=True) is not None
        assert parse_address(raw) == ParsedAddress(**_full_path(raw).model_dump())

    @given(st.one_of(SIMPLE_ADDRESS, INTL_ADDRESS, EMAILISH, st.text(max_size=40)))
    def test_parse_fast_then_guarded_equals_parse_address(self, raw: str) -> None:
        def two_step() -> ParsedAddress | tuple[str, str, bool]:
            text, fast = parse_fast(raw)
            if fast is None:
                return parse_guarded(raw, text)
            return fast.local_part, fast.domain, fast.smtputf8

        expected, got = _outcome(lambda: parse_address(raw)), _outcome(two_step)
        if isinstance(expected, ParsedAddress) and isinstance(got, tuple) and len(got) == 3:
            assert got == (expected.local_part, expected.ascii_domain, expected.smtputf8)
            assert expected.normalized == f"{got[0]}@{got[1]}"
        else:
            assert got == expected

    def test_parse_fast_leaves_quoted_and_idn_to_the_full_parser(self) -> None:
        assert parse_fast(' "a b"@x.com ') == ('"a b"@x.com', None)
        assert parse_fast("a@bücher.de") == ("a@bücher.de", None)
        assert parse_fast(" ü@x.com") == ("ü@x.com", _fastsyntax.Simple("ü", "x.com", True))

    @given(st.one_of(SIMPLE_ADDRESS, INTL_ADDRESS))
    def test_parse_matches_email_validator(self, raw: str) -> None:
        raw = raw.strip()  # parse_address trims; email-validator does not
        try:
            expected = _full_path(raw)
        except EmailNotValidError:
            with pytest.raises(AddressError):
                parse_address(raw)
            return
        if len(expected.local_part.encode()) > MAX_LOCAL_OCTETS:
            with pytest.raises(InjectionError):
                parse_address(raw)
            return
        assert parse_address(raw) == expected


def _outcome(call: Callable[[], object]) -> object:
    """What ``call`` returns, or the type and message of the AddressError it raises."""
    try:
        return call()
    except AddressError as exc:
        return (type(exc).__name__, str(exc))


class TestCanonicalForms:
    def test_gmail_dots_tags_and_googlemail_fold(self) -> None:
        parsed = parse_address("J.O.H.N.Smith+news@GoogleMail.com")
        assert canonical_mailbox(parsed) == "johnsmith@gmail.com"
        assert canonical_mailbox(parse_address("johnsmith@gmail.com")) == "johnsmith@gmail.com"

    def test_other_domains_are_untouched(self) -> None:
        parsed = parse_address("J.Smith+news@Example.com")
        assert canonical_mailbox(parsed) == "J.Smith+news@example.com"

    def test_gmail_quoted_or_tag_only_left_alone(self) -> None:
        assert canonical_mailbox(parse_address('"a b"@gmail.com')) == '"a b"@gmail.com'
        assert canonical_mailbox(parse_address("+tag@gmail.com")) == "+tag@gmail.com"

    def test_strip_subaddress(self) -> None:
        assert strip_subaddress(parse_address("john+news@Example.com")) == "john@example.com"
        assert strip_subaddress(parse_address("john-news@example.com"), separator="-") == (
            "john@example.com"
        )
        assert strip_subaddress(parse_address("john@example.com")) == "john@example.com"

    def test_strip_subaddress_keeps_what_it_cannot_split(self) -> None:
        assert strip_subaddress(parse_address("+news@example.com")) == "+news@example.com"
        assert strip_subaddress(parse_address('"a+b c"@example.com')) == '"a+b c"@example.com'
        assert strip_subaddress(parse_address("a+b@example.com"), separator="") == "a+b@example.com"
