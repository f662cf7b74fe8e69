"""The sans-I/O SMTP wire: reply buffer (chunking, limits, garbage) and command encoder."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from emailintel.errors import AddressError, InjectionError, SmtpWireError
from emailintel.smtp import wire
from emailintel.smtp.wire import Reply, ReplyBuffer, format_reply

# Reply text as a server may send it: no CR/LF/NUL, no outer blanks (the parser strips those).
texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=60
).map(lambda t: t.strip(" \t"))
codes = st.integers(200, 599)
replies = st.tuples(codes, st.lists(texts, min_size=1, max_size=6))


def feed_chunks(buffer: ReplyBuffer, data: bytes, cuts: list[int]) -> list[Reply]:
    """Feed ``data`` split at ``cuts`` (any positions), collecting the replies."""
    out: list[Reply] = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        out += buffer.feed(data[start:end])
    return out


# --- reply buffer ------------------------------------------------------------------------------


def test_single_and_multi_line_replies() -> None:
    data = b"220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
    got = ReplyBuffer().feed(data)
    assert got == [
        Reply(220, ("mx.test ESMTP",), None),
        Reply(250, ("mx.test", "PIPELINING", "SIZE 1000"), None),
    ]
    assert got[1].message == "mx.test\nPIPELINING\nSIZE 1000"


def test_enhanced_status_codes() -> None:
    buffer = ReplyBuffer()
    (unknown,) = buffer.feed(b"550-5.1.1 The email account does not exist.\r\n550 5.1.1 Bye\r\n")
    (ok,) = buffer.feed(b"250 2.1.5 Ok\r\n")
    (hashed,) = buffer.feed(b"421 Too many errors #4.7.0\r\n")
    (plain,) = buffer.feed(b"250 Ok 1.2.3 later\r\n")
    assert (unknown.code, unknown.enhanced_code) == (550, "5.1.1")
    assert ok.enhanced_code == "2.1.5"
    assert hashed.enhanced_code == "4.7.0"
    assert plain.enhanced_code is None


def test_bare_lf_and_code_only_lines() -> None:
    got = ReplyBuffer().feed(b"250-first\n250\n")
    assert got == [Reply(250, ("first", ""), None)]


def test_whitespace_around_text_is_dropped_the_same_way_everywhere() -> None:
    got = ReplyBuffer().feed(b"250-  spaced \t\r\n250 \tlast  \r\n")
    assert got[0].lines == ("spaced", "last")


def test_utf8_and_invalid_bytes_are_decoded_without_raising() -> None:
    (reply,) = ReplyBuffer().feed("250 Grüße ".encode() + b"\xff\r\n")
    assert reply.lines == ("Grüße \ufffd",)


def test_partial_reply_is_held_until_complete() -> None:
    buffer = ReplyBuffer()
    assert buffer.feed(b"250-one\r\n250-tw") == []
    assert buffer.pending == len(b"250-one\r\n250-tw")
    assert buffer.feed(b"o\r\n250 three\r\n") == [Reply(250, ("one", "two", "three"), None)]
    assert buffer.pending == 0


def test_pipelined_replies_come_back_in_order() -> None:
    batch = wire.pipeline(
        wire.rset(), wire.mail_from(""), wire.rcpt_to("a@b.test"), wire.rcpt_to("c@b.test")
    )
    assert batch == b"RSET\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.test>\r\nRCPT TO:<c@b.test>\r\n"
    answer = b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@b.test>: unknown\r\n"
    got = ReplyBuffer().feed(answer)
    assert [(r.code, r.enhanced_code) for r in got] == [
        (250, "2.0.0"),
        (250, "2.1.0"),
        (250, "2.1.5"),
        (550, "5.1.1"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n",  # no code
        b"25\r\n",  # short code
        b"650 no such class\r\n",
        b"199 informational\r\n",
        b"250_bad separator\r\n",
        b"250-one\r\n251 two\r\n",  # the code changes within a reply
        b"\r\n",
        b"\x00\x00\x00\r\n",
    ],
)
def test_non_replies_are_typed_errors(data: bytes) -> None:
    with pytest.raises(SmtpWireError):
        ReplyBuffer().feed(data)


def test_after_an_error_the_buffer_stays_broken() -> None:
    buffer = ReplyBuffer()
    with pytest.raises(SmtpWireError):
        buffer.feed(b"garbage\r\n")
    with pytest.raises(SmtpWireError, match="out of step"):
        buffer.feed(b"250 ok\r\n")


def test_line_length_limit_on_complete_and_partial_lines() -> None:
    buffer = ReplyBuffer(max_line=100)
    assert buffer.feed(b"250 " + b"x" * 94 + b"\r\n")[0].code == 250  # 100 bytes with CRLF
    with pytest.raises(SmtpWireError, match="longer than 100"):
        ReplyBuffer(max_line=100).feed(b"250 " + b"x" * 95 + b"\r\n")
    with pytest.raises(SmtpWireError, match="longer than 100"):
        ReplyBuffer(max_line=100).feed(b"250 " + b"x" * 95 + b"\r")  # cannot end in time
    partial = ReplyBuffer(max_line=100)
    partial.feed(b"250 " + b"x" * 90)
    with pytest.raises(SmtpWireError, match="longer than 100"):
        partial.feed(b"x" * 20)  # no line end yet, already too long


def test_line_count_limit_per_reply() -> None:
    ok = ReplyBuffer(max_lines=3).feed(b"250-a\r\n250-b\r\n250 c\r\n")
    assert ok[0].lines == ("a", "b", "c")
    with pytest.raises(SmtpWireError, match="more than 3 lines"):
        ReplyBuffer(max_lines=3).feed(b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n")


def test_total_buffered_bytes_limit() -> None:
    buffer = ReplyBuffer(max_line=100, max_lines=1000, max_buffer=500)
    line = b"250-" + b"y" * 40 + b"\r\n"
    assert buffer.feed(line * 10) == []  # 460 bytes held
    with pytest.raises(SmtpWireError, match="unfinished reply longer than 500"):
        buffer.feed(line)


def test_default_limits_bound_an_endless_multiline_reply() -> None:
    buffer = ReplyBuffer()
    line = b"250-" + b"z" * 200 + b"\r\n"
    fed = 0
    with contextlib.suppress(SmtpWireError):
        while fed < 10_000:
            buffer.feed(line)
            fed += 1
    assert fed < 10_000  # stopped by a limit
    assert buffer.pending == 0  # and what it held is dropped


@given(st.lists(replies, max_size=8), st.lists(st.integers(0, 10_000), max_size=20))
def test_any_chunking_gives_the_same_replies(
    batch: list[tuple[int, list[str]]], cuts: list[int]
) -> None:
    data = b"".join(format_reply(code, lines) for code, lines in batch)
    whole = ReplyBuffer().feed(data)
    assert feed_chunks(ReplyBuffer(), data, cuts) == whole
    assert [(r.code, list(r.lines)) for r in whole] == batch


@given(st.lists(replies, max_size=8))
def test_bare_lf_parses_like_crlf(batch: list[tuple[int, list[str]]]) -> None:
    data = b"".join(format_reply(code, lines) for code, lines in batch)
    assert ReplyBuffer().feed(data.replace(b"\r\n", b"\n")) == ReplyBuffer().feed(data)


@given(codes, st.lists(texts, min_size=1, max_size=6))
def test_format_then_parse_round_trips(code: int, lines: list[str]) -> None:
    (reply,) = ReplyBuffer().feed(format_reply(code, lines))
    assert (reply.code, list(reply.lines)) == (code, lines)
    assert reply.enhanced_code == wire.parse_enhanced_code(reply.message)


@given(st.lists(st.binary(max_size=300), max_size=10))
@example([b"250-a\r\n", b"251 b\r\n"])
@example([b"250-" + b"x" * 5000])
def test_garbage_raises_only_the_typed_error(chunks: list[bytes]) -> None:
    buffer = ReplyBuffer(max_line=512, max_lines=8, max_buffer=2048)
    try:
        for chunk in chunks:
            for reply in buffer.feed(chunk):
                assert 200 <= reply.code <= 599
                assert all("\n" not in line for line in reply.lines)
    except SmtpWireError:
        pass
    assert buffer.pending <= 2048


@given(st.lists(st.sampled_from([b"250-", b"250 ", b"550 5.1.1 ", b"\r", b"\n", b"x", b"\xff"])))
def test_near_miss_garbage_raises_only_the_typed_error(parts: list[bytes]) -> None:
    with contextlib.suppress(SmtpWireError):
        ReplyBuffer().feed(b"".join(parts))


@pytest.mark.parametrize("code", [199, 600, True, 250.0])
def test_format_reply_refuses_bad_codes(code: object) -> None:
    with pytest.raises(SmtpWireError):
        format_reply(code, ["x"])  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["a\r\n250 injected", "a\nb", "nul\x00"])
def test_format_reply_refuses_line_breaks(text: str) -> None:
    with pytest.raises(InjectionError):
        format_reply(250, [text])


def test_format_reply_without_lines_is_a_bare_code() -> None:
    assert format_reply(250, []) == b"250 \r\n"


def test_ehlo_extensions() -> None:
    (reply,) = ReplyBuffer().feed(
        b"250-mx.test Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
        b"250-8BITMIME\r\n250-AUTH=LOGIN\r\n250-  \r\n250 SMTPUTF8\r\n"
    )
    assert wire.parse_extensions(reply) == {
        "pipelining": "",
        "size": "10240000",
        "8bitmime": "",
        "smtputf8": "",
    }


# --- command encoder ----------------------------------------------------------------------------


def test_commands() -> None:
    assert wire.ehlo("probe.verifier.test") == b"EHLO probe.verifier.test\r\n"
    assert wire.helo("[192.0.2.1]") == b"HELO [192.0.2.1]\r\n"
    assert wire.starttls() == b"STARTTLS\r\n"
    assert wire.mail_from("") == b"MAIL FROM:<>\r\n"
    assert (
        wire.mail_from("jö@b.test", ["SMTPUTF8"]) == "MAIL FROM:<jö@b.test> SMTPUTF8\r\n".encode()
    )
    assert wire.mail_from("a@b.test", ["SIZE=100", "BODY=8BITMIME"]) == (
        b"MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME\r\n"
    )
    assert wire.rcpt_to("a@b.test", ["NOTIFY=NEVER"]) == b"RCPT TO:<a@b.test> NOTIFY=NEVER\r\n"
    assert wire.rset() == b"RSET\r\n"
    assert wire.noop() == b"NOOP\r\n"
    assert wire.quit() == b"QUIT\r\n"


@pytest.mark.parametrize("name", ["a b", "a\r\nMAIL FROM:<x>", "a\x00", "", "é.test", "x" * 256])
def test_helo_names_that_could_inject_are_refused(name: str) -> None:
    for encode in (wire.ehlo, wire.helo):
        with pytest.raises(InjectionError):
            encode(name)


@pytest.mark.parametrize("param", ["SIZE=1\r\nRCPT TO:<x>", "A B", "=x", "SIZE=", "X=a=b\x00", ""])
def test_parameters_that_could_inject_are_refused(param: str) -> None:
    with pytest.raises(InjectionError):
        wire.mail_from("a@b.test", [param])
    with pytest.raises(InjectionError):
        wire.rcpt_to("a@b.test", [param])


@pytest.mark.parametrize(
    "address", ["a@b.test\r\nDATA", "a@b\n.test", "a\x00@b.test", "a@b.test>", "<a", "x" * 400]
)
def test_paths_that_could_inject_are_refused(address: str) -> None:
    with pytest.raises(InjectionError):
        wire.rcpt_to(address)
    with pytest.raises(InjectionError):
        wire.mail_from(address)


def test_empty_recipient_is_refused_but_null_sender_is_not() -> None:
    with pytest.raises(InjectionError):
        wire.rcpt_to("")
    assert wire.mail_from("") == b"MAIL FROM:<>\r\n"


def test_lone_surrogate_is_a_syntax_error() -> None:
    with pytest.raises(AddressError) as info:
        wire.rcpt_to("\ud800@b.test")
    assert info.value.code == "syntax_invalid"


@pytest.mark.parametrize("line", [b"RSET", b"RSET\r\nQUIT\r\n", b"RS\rET\r\n", b"RS\nET\r\n"])
def test_pipeline_takes_only_single_encoded_lines(line: bytes) -> None:
    with pytest.raises(InjectionError):
        wire.pipeline(wire.noop(), line)


@given(st.text(max_size=80), st.lists(st.text(max_size=20), max_size=3))
def test_encoded_commands_are_one_line_or_a_typed_error(address: str, params: list[str]) -> None:
    for encode in (wire.mail_from, wire.rcpt_to):
        try:
            line = encode(address, params)
        except AddressError:  # InjectionError is one
            continue
        assert line.endswith(b"\r\n")
        assert b"\r" not in line[:-2]
        assert b"\n" not in line[:-2]
        assert b"\x00" not in line
        verb, _, rest = line[:-2].partition(b":<")
        path, _, tail = rest.rpartition(b">")
        assert verb in (b"MAIL FROM", b"RCPT TO")
        assert path.decode() == address  # the path round-trips exactly
        assert tail.split() == [p.encode() for p in params]
