"""Dashboard credentials and the one place that turns them into a tenant scope.

A user holds an HS256 JWT signed with ``LEDGER_DASHBOARD_SECRET``:

* a tenant user: ``{"tenant_id": <int>, "role": "tenant", "exp": ...}``;
* an administrator: ``{"role": "admin", "exp": ...}`` (no tenant: sees every tenant).

:func:`verify_token` checks signature, algorithm (HS256 only: ``alg=none`` and key confusion are
refused by pinning the algorithm list), expiry (required) and the claims' shape. Anything wrong
is a :class:`AuthError` (401) and no data is read.

:func:`tenant_scope` is the only function that decides which tenants a request may read. Every
tenant id the client sent (path, query string, JSON body) is passed to it; a tenant user whose
request names any other tenant gets :class:`ForbiddenError` (403). The result, a
:class:`TenantScope`, is the only way to call the report queries, which bind its ids as
parameters (``lib``-style: never formatted into SQL).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import jwt

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32

Role = Literal["tenant", "admin"]


class AuthError(Exception):
    """No valid credential: missing, malformed, tampered, wrongly signed or expired (401)."""


class ForbiddenError(Exception):
    """A valid credential asking for data outside its scope (403)."""


class UnknownTenantError(Exception):
    """An administrator naming a tenant that does not exist (404)."""


@dataclass(frozen=True)
class Claims:
    role: Role
    #: The tenant of a tenant user; None for an administrator.
    tenant_id: int | None
    expires_at: int
    subject: str


@dataclass(frozen=True)
class TenantScope:
    """The tenants one request may read, decided by :func:`tenant_scope` alone."""

    tenant_ids: tuple[int, ...]

    @property
    def single(self) -> int:
        """The one tenant of a per-tenant view."""
        if len(self.tenant_ids) != 1:
            raise ValueError("this view needs exactly one tenant")
        return self.tenant_ids[0]


def check_secret(secret: str) -> str:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"LEDGER_DASHBOARD_SECRET must be at least {MIN_SECRET_BYTES} bytes "
            "(HS256 with a short key is brute-forceable)"
        )
    return secret


def mint_token(
    secret: str,
    *,
    tenant_id: int | None,
    role: Role = "tenant",
    ttl_seconds: int = 8 * 3600,
    subject: str = "demo",
    now: float | None = None,
) -> str:
    """A signed token; ``role="admin"`` takes no tenant, ``role="tenant"`` needs one."""
    if (role == "admin") != (tenant_id is None):
        raise ValueError("an admin token has no tenant_id; a tenant token needs one")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if tenant_id is not None:
        payload["tenant_id"] = int(tenant_id)
    return jwt.encode(payload, check_secret(secret), algorithm=ALGORITHM)


def verify_token(token: str | None, secret: str) -> Claims:
    """The verified claims of ``token``.

    Raises:
        AuthError: missing, not a JWT, not HS256, bad signature, expired or no ``exp``, or
            claims of the wrong shape.
    """
    if not token:
        raise AuthError("missing credential")
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp"], "verify_exp": True, "verify_signature": True},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {type(exc).__name__}") from exc
    role = payload.get("role", "tenant")
    tenant = payload.get("tenant_id")
    exp = payload["exp"]
    subject = str(payload.get("sub", ""))
    if role == "admin" and tenant is None:
        return Claims("admin", None, int(exp), subject)
    # bool is an int subclass: {"tenant_id": true} must not become tenant 1.
    if role == "tenant" and type(tenant) is int and tenant > 0:
        return Claims("tenant", tenant, int(exp), subject)
    raise AuthError("invalid token: claims")


class VerifiedTokens:
    """:func:`verify_token` remembering the claims of tokens it verified, keyed by the whole
    token (signature included: a tampered token is another key and is verified afresh). Expiry
    is checked at every use. A page polls with the same token every few seconds, and an HMAC and
    two JSON parses per request are most of a cached answer's cost."""

    def __init__(self, secret: str, max_entries: int = 10_000) -> None:
        self._secret = secret
        self._max_entries = max_entries
        self._claims: dict[str, Claims] = {}

    def verify(self, token: str | None) -> Claims:
        claims = self._claims.get(token) if token else None
        if claims is None:
            claims = verify_token(token, self._secret)
            if len(self._claims) >= self._max_entries:
                self._claims.clear()
            assert token is not None
            self._claims[token] = claims
        elif claims.expires_at <= time.time():
            raise AuthError("token expired")
        return claims


def parse_tenant_id(value: object) -> int:
    """A client-supplied tenant id as an int, or :class:`ForbiddenError` if it is not one."""
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    raise ForbiddenError(f"not a tenant id: {value!r}")


def tenant_scope(
    claims: Claims, requested: Iterable[object], known_tenants: Collection[int]
) -> TenantScope:
    """THE tenant filter: which tenants this request may read.

    Args:
        claims: verified by :func:`verify_token` (never anything the client sent unsigned).
        requested: every tenant id the client named, from the path, the query string and the
            body, raw. None of them is trusted; they only narrow or are refused.
        known_tenants: the tenants that exist.

    A tenant user reads their own tenant only: naming any other id anywhere is a 403 (even
    alongside their own). An administrator reads the one tenant they name (404 if unknown), or
    every tenant when they name none; naming two different tenants is a 403.
    """
    ids = {parse_tenant_id(value) for value in requested}
    if claims.role == "tenant":
        assert claims.tenant_id is not None
        if ids - {claims.tenant_id}:
            raise ForbiddenError("this credential is scoped to another tenant")
        return TenantScope((claims.tenant_id,))
    if claims.role == "admin":
        if len(ids) > 1:
            raise ForbiddenError("a request names one tenant at most")
        if not ids:
            return TenantScope(tuple(sorted(known_tenants)))
        (tenant,) = ids
        if tenant not in known_tenants:
            raise UnknownTenantError(f"no tenant {tenant}")
        return TenantScope((tenant,))
    raise ForbiddenError("unknown role")
