"""Session JWTs: verified with an HS256 secret or with RS256/ES256 keys from a JWKS URL.

Claims follow Supabase's: ``sub`` (the user), ``email``, ``role``, ``app_metadata`` (``plan``
lives there) and ``user_metadata``; ``exp`` is required. ``aud``/``iss`` are checked when
configured. The JWKS document is fetched with a size bound and cached; an unknown ``kid`` triggers
one refresh at most every :data:`JWKS_MIN_REFRESH` seconds (key rotation without a restart).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from jwt import PyJWK
from pydantic_core import from_json

__all__ = [
    "JWKS_MIN_REFRESH",
    "SessionClaims",
    "SessionError",
    "SessionVerifier",
    "issue_session_jwt",
]

JWKS_MIN_REFRESH = 60.0
JWKS_TTL = 3600.0
MAX_JWKS_BYTES = 256 * 1024
MAX_TOKEN = 8192
_ASYMMETRIC = ("RS256", "ES256")


class SessionError(Exception):
    """A token that is malformed, expired, wrongly signed or from an unknown key."""


@dataclass(frozen=True)
class SessionClaims:
    """What the server uses from a verified token."""

    subject: str
    email: str | None
    role: str | None
    plan: str | None
    app_metadata: Mapping[str, Any]
    user_metadata: Mapping[str, Any]


def _claims(payload: Mapping[str, Any]) -> SessionClaims:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 200:
        raise SessionError("the token has no subject")
    app = payload.get("app_metadata")
    user = payload.get("user_metadata")
    app_metadata = app if isinstance(app, dict) else {}
    plan = app_metadata.get("plan")
    email = payload.get("email")
    role = payload.get("role")
    return SessionClaims(
        subject=sub,
        email=email if isinstance(email, str) else None,
        role=role if isinstance(role, str) else None,
        plan=plan if isinstance(plan, str) else None,
        app_metadata=app_metadata,
        user_metadata=user if isinstance(user, dict) else {},
    )


@dataclass
class SessionVerifier:
    """Verifies session tokens with ``secret`` (HS256) and/or the keys at ``jwks_url``."""

    secret: bytes | None = None
    jwks_url: str | None = None
    audience: str | None = None
    issuer: str | None = None
    http: httpx.AsyncClient | None = None
    leeway: float = 30.0
    _keys: dict[str, PyJWK] = field(default_factory=dict)
    _fetched_at: float = float("-inf")

    async def verify(self, token: str) -> SessionClaims:
        """The token's claims; raises :class:`SessionError` for anything wrong with it."""
        if len(token) > MAX_TOKEN:
            raise SessionError("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SessionError("the token is not a JWT") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self.secret is not None:
            key = self.secret
        elif alg in _ASYMMETRIC and self.jwks_url is not None:
            key = await self._jwk(header.get("kid"), alg)
        else:
            raise SessionError("the token's algorithm is not accepted")
        options = {"require": ["exp", "sub"], "verify_aud": self.audience is not None}
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise SessionError("the token has expired") from None
        except jwt.PyJWTError:
            raise SessionError("the token's signature or claims are invalid") from None
        return _claims(payload)

    async def _jwk(self, kid: object, alg: str) -> Any:
        now = time.monotonic()
        stale = now - self._fetched_at > JWKS_TTL
        unknown = not isinstance(kid, str) or kid not in self._keys
        if stale or (unknown and now - self._fetched_at > JWKS_MIN_REFRESH):
            await self._refresh(now)
        if not isinstance(kid, str):
            candidates = [k for k in self._keys.values() if k.algorithm_name == alg]
            if len(candidates) != 1:
                raise SessionError("the token names no key id")
            return candidates[0].key
        jwk = self._keys.get(kid)
        if jwk is None:
            raise SessionError("the token's key is unknown")
        if jwk.algorithm_name != alg:
            raise SessionError("the token's algorithm does not match its key")
        return jwk.key

    async def _refresh(self, now: float) -> None:
        assert self.jwks_url is not None
        client = self.http or httpx.AsyncClient(timeout=5.0)
        try:
            async with client.stream("GET", self.jwks_url) as response:
                if response.status_code != 200:
                    raise SessionError("the key set could not be fetched")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise SessionError("the key set is too large")
        except httpx.HTTPError:
            raise SessionError("the key set could not be fetched") from None
        finally:
            if self.http is None:
                await client.aclose()
        self._fetched_at = now
        self._keys = _parse_jwks(bytes(body))


def _parse_jwks(raw: bytes) -> dict[str, PyJWK]:
    try:  # pydantic's parser has its own depth limit: no C recursion on hostile nesting
        document = from_json(raw)
    except (ValueError, RecursionError):
        raise SessionError("the key set is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise SessionError("the key set has no keys")
    keys: dict[str, PyJWK] = {}
    for entry in entries[:100]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        try:
            jwk = PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue  # a key we cannot use (another algorithm, a bad value): skip it
        if jwk.algorithm_name in _ASYMMETRIC:
            keys[entry["kid"]] = jwk
    return keys


def issue_session_jwt(
    secret: bytes,
    subject: str,
    *,
    email: str | None = None,
    plan: str | None = None,
    lifetime: float = 30 * 24 * 3600,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """An HS256 session token (what the seed's dashboard hands out; ``bavlio users create``)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": subject,
        "email": email,
        "role": "authenticated",
        "app_metadata": {"plan": plan} if plan else {},
        "user_metadata": {},
        "iat": now,
        "exp": now + int(lifetime),
    }
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    return jwt.encode(payload, secret, algorithm="HS256")
