"""The TLS session cache: bounds, expiry, context binding, and resumption through its context.

Sessions come from real TLS 1.3 handshakes over memory BIOs (a throwaway self-signed
certificate from the openssl tool), so the cache holds what a live connection would give it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from emailintel.errors import ConfigError
from emailintel.smtp.tlssessions import TlsSessionCache

HOST = "mx.resume.test"


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl tool is needed to make a test certificate", pytrace=False)
    d: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", f"/CN={HOST}", "-days", "2",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLObject:
    """A finished client handshake in memory, with the server's session tickets read."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    ours = client.wrap_bio(c_in, c_out, server_hostname=HOST)
    theirs = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(10):
        for i, end in enumerate((ours, theirs)):
            if not done[i]:
                try:
                    end.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            break
    assert all(done)
    theirs.write(b"220 ready\r\n")  # TLS 1.3 tickets travel after the handshake
    c_in.write(s_out.read())
    assert ours.read() == b"220 ready\r\n"
    return ours


def test_second_handshake_through_context_for_resumes(server_context: ssl.SSLContext) -> None:
    cache, client = TlsSessionCache(), client_context()
    first = handshake(cache.context_for(HOST, 25, client), server_context)
    assert not first.session_reused
    cache.put(HOST, 25, client, first.session)
    assert len(cache) == 1
    second = handshake(cache.context_for(HOST, 25, client), server_context)
    assert second.session_reused
    assert second.version() == "TLSv1.3"
    # another port of the same host has no session
    assert cache.context_for(HOST, 587, client) is client


def test_bounded_least_recently_used_first(server_context: ssl.SSLContext) -> None:
    client = client_context()
    session = handshake(client, server_context).session
    assert session is not None
    cache = TlsSessionCache(maxsize=3)
    for host in ("a.test", "b.test", "c.test"):
        cache.put(host, 25, client, session)
    assert cache.get("a.test", 25, client) is session  # a is now the most recently used
    cache.put("d.test", 25, client, session)
    assert len(cache) == 3
    assert cache.get("b.test", 25, client) is None  # the least recently used went
    assert all(cache.get(h, 25, client) is session for h in ("a.test", "c.test", "d.test"))
    for i in range(100):
        cache.put(f"mx{i}.test", 25, client, session)
    assert len(cache) == 3


def test_expired_sessions_are_dropped(server_context: ssl.SSLContext) -> None:
    client = client_context()
    session = handshake(client, server_context).session
    assert session is not None
    now = [float(session.time)]
    cache = TlsSessionCache(clock=lambda: now[0])
    cache.put(HOST, 25, client, session)
    now[0] += session.timeout - 1
    assert cache.get(HOST, 25, client) is session
    now[0] += 1
    assert cache.get(HOST, 25, client) is None
    assert len(cache) == 0


def test_sessions_are_bound_to_their_context(server_context: ssl.SSLContext) -> None:
    client, other = client_context(), client_context()
    session = handshake(client, server_context).session
    cache = TlsSessionCache()
    cache.put(HOST, 25, client, session)
    assert cache.get(HOST, 25, other) is None
    assert cache.context_for(HOST, 25, other) is other
    assert cache.get(HOST.upper(), 25, client) is session  # host names are case-insensitive


def test_discard_and_empty_sessions(server_context: ssl.SSLContext) -> None:
    client = client_context()
    cache = TlsSessionCache()
    cache.put(HOST, 25, client, None)
    assert len(cache) == 0
    cache.put(HOST, 25, client, handshake(client, server_context).session)
    cache.discard(HOST, 25)
    cache.discard("never.test", 25)
    assert len(cache) == 0


@pytest.mark.parametrize("size", [0, -1, True, 1.5])
def test_bad_size_is_a_config_error(size: object) -> None:
    with pytest.raises(ConfigError):
        TlsSessionCache(size)  # type: ignore[arg-type]
