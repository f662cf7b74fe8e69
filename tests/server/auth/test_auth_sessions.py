"""Session JWTs: HS256 with a secret, RS256/ES256 from a JWKS URL served on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from server.auth.sessions import SessionError, SessionVerifier, issue_session_jwt

SECRET = b"s" * 32


class _Jwks:
    """A loopback HTTP server answering GET with ``document`` (bytes) and counting requests."""

    def __init__(self) -> None:
        self.document = b"{}"
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.document)))
                self.end_headers()
                self.wfile.write(outer.document)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def set_keys(self, *entries: dict[str, Any]) -> None:
        self.document = json.dumps({"keys": list(entries)}).encode()


@pytest.fixture
def jwks() -> Iterator[_Jwks]:
    server = _Jwks()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _rsa() -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return key, {**public, "kid": "rsa1", "alg": "RS256", "use": "sig"}


def _ec() -> tuple[Any, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return key, {**public, "kid": "ec1", "alg": "ES256", "use": "sig"}


def _claims(**extra: Any) -> dict[str, Any]:
    return {
        "sub": "user-1",
        "email": "a@b.test",
        "role": "authenticated",
        "app_metadata": {"plan": "paid"},
        "user_metadata": {"name": "A"},
        "exp": int(time.time()) + 600,
        **extra,
    }


async def test_hs256_round_trip_carries_supabase_claims() -> None:
    token = issue_session_jwt(SECRET, "user-1", email="a@b.test", plan="paid")
    claims = await SessionVerifier(secret=SECRET).verify(token)
    assert (claims.subject, claims.email, claims.plan, claims.role) == (
        "user-1",
        "a@b.test",
        "paid",
        "authenticated",
    )


@pytest.mark.parametrize(
    ("token_of", "message"),
    [
        (lambda: "not.a.jwt", "not a JWT"),
        (lambda: jwt.encode(_claims(exp=int(time.time()) - 3600), SECRET, "HS256"), "expired"),
        (lambda: jwt.encode(_claims(), b"x" * 32, "HS256"), "invalid"),
        (lambda: jwt.encode({"sub": "u"}, SECRET, "HS256"), "invalid"),
        (lambda: jwt.encode(_claims(), SECRET * 2, "HS512"), "algorithm"),
        (lambda: jwt.encode(_claims(sub=""), SECRET, "HS256"), "subject"),
        (lambda: "a" * 9000, "too long"),
    ],
)
async def test_bad_hs256_tokens_are_refused(token_of: Any, message: str) -> None:
    with pytest.raises(SessionError, match=message):
        await SessionVerifier(secret=SECRET).verify(token_of())


async def test_none_algorithm_is_refused() -> None:
    token = jwt.encode(_claims(), None, algorithm="none")
    with pytest.raises(SessionError, match="algorithm"):
        await SessionVerifier(secret=SECRET).verify(token)


async def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = SessionVerifier(secret=SECRET, audience="bavlio", issuer="https://idp.test")
    good = issue_session_jwt(SECRET, "u", audience="bavlio", issuer="https://idp.test")
    assert (await verifier.verify(good)).subject == "u"
    for token in (
        issue_session_jwt(SECRET, "u", audience="other", issuer="https://idp.test"),
        issue_session_jwt(SECRET, "u", audience="bavlio", issuer="https://evil.test"),
        issue_session_jwt(SECRET, "u"),
    ):
        with pytest.raises(SessionError):
            await verifier.verify(token)


async def test_rs256_and_es256_from_jwks(jwks: _Jwks) -> None:
    rsa_key, rsa_jwk = _rsa()
    ec_key, ec_jwk = _ec()
    jwks.set_keys(rsa_jwk, ec_jwk, {"kty": "oct", "kid": "sym", "k": "AAAA"})
    verifier = SessionVerifier(jwks_url=jwks.url)
    one = jwt.encode(_claims(), rsa_key, "RS256", headers={"kid": "rsa1"})
    two = jwt.encode(_claims(sub="user-2"), ec_key, "ES256", headers={"kid": "ec1"})
    assert (await verifier.verify(one)).subject == "user-1"
    assert (await verifier.verify(two)).subject == "user-2"
    assert jwks.hits == 1  # cached
    # An HS256 token signed with the RSA public key (algorithm confusion) is refused.
    with pytest.raises(SessionError):
        await verifier.verify(jwt.encode(_claims(), SECRET, "HS256"))
    # A token naming the EC key with RS256 is refused.
    forged = jwt.encode(_claims(), rsa_key, "RS256", headers={"kid": "ec1"})
    with pytest.raises(SessionError, match="does not match"):
        await verifier.verify(forged)


async def test_unknown_kid_refreshes_once_then_fails(jwks: _Jwks) -> None:
    rsa_key, rsa_jwk = _rsa()
    jwks.set_keys(rsa_jwk)
    verifier = SessionVerifier(jwks_url=jwks.url)
    token = jwt.encode(_claims(), rsa_key, "RS256", headers={"kid": "other"})
    for _ in range(3):
        with pytest.raises(SessionError, match="unknown"):
            await verifier.verify(token)
    assert jwks.hits == 1  # refreshes are rate limited


@pytest.mark.parametrize(
    ("status", "document"),
    [
        (500, b"{}"),
        (200, b"not json"),
        (200, b'{"keys": 5}'),
        (200, b"[" * 100_000),
        (200, b'{"keys": []}' + b" " * 300_000),
    ],
)
async def test_broken_key_sets_are_errors_not_crashes(
    jwks: _Jwks, status: int, document: bytes
) -> None:
    rsa_key, _ = _rsa()
    jwks.status, jwks.document = status, document
    token = jwt.encode(_claims(), rsa_key, "RS256", headers={"kid": "rsa1"})
    with pytest.raises(SessionError):
        await SessionVerifier(jwks_url=jwks.url).verify(token)


async def test_unreachable_jwks_is_an_error() -> None:
    rsa_key, _ = _rsa()
    token = jwt.encode(_claims(), rsa_key, "RS256", headers={"kid": "rsa1"})
    with pytest.raises(SessionError, match="fetched"):
        await SessionVerifier(jwks_url="http://127.0.0.1:9/jwks").verify(token)
