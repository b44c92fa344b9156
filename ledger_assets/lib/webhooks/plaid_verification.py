"""Verify a Plaid webhook delivery (the ``Plaid-Verification`` ES256 JWT).

Plaid signs each webhook with a JWT whose header names the key (``kid``) and whose claims carry
the issue time and the SHA-256 of the exact body. The steps follow Plaid's documentation:
require ``alg == ES256`` before anything else (an ``alg: none`` or HS256 token is never
considered), fetch the public key by ``kid`` (cached; an expired key is refused), verify the
signature, refuse tokens issued more than 5 minutes ago, and compare the body hash in constant
time. Plaid webhooks carry no event id, so the inbox key is a hash of the verified body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

from ledger_assets.lib.webhooks.rejection import WebhookRejectedError

MAX_TOKEN_AGE_S = 5 * 60

#: Fetches the JWK for a key id (``/webhook_verification_key/get``); None if Plaid has none.
KeyFetcher = Callable[[str], Mapping[str, Any] | None]


@dataclass(frozen=True)
class PlaidWebhook:
    #: SHA-256 of the raw body: the idempotency key, since Plaid sends no event id.
    content_key: str
    webhook_type: str
    webhook_code: str
    item_id: str | None
    issued_at: int
    payload: dict[str, Any]


class PlaidKeyCache:
    """Public keys by ``kid``, fetched once; unknown kids are fetched, expired keys refused."""

    def __init__(self, fetch: KeyFetcher) -> None:
        self._fetch = fetch
        self._keys: dict[str, Mapping[str, Any]] = {}

    def key_for(self, kid: str, now: float) -> Mapping[str, Any]:
        key = self._keys.get(kid)
        if key is None:
            key = self._fetch(kid)
            if key is None:
                raise WebhookRejectedError(f"unknown Plaid key id {kid!r}")
            self._keys[kid] = key
        expired_at = key.get("expired_at")
        if expired_at is not None and float(expired_at) <= now:
            raise WebhookRejectedError(f"Plaid key {kid!r} has expired")
        return key


def verify_plaid_webhook(
    raw_body: bytes,
    verification_header: str | None,
    keys: PlaidKeyCache,
    now: float | None = None,
) -> PlaidWebhook:
    """Check one delivery and return the webhook.

    Raises:
        WebhookRejectedError: missing or malformed token, wrong algorithm, unknown or expired
            key, bad signature, a token older than 5 minutes, or a body altered after signing.
    """
    if not verification_header:
        raise WebhookRejectedError("missing Plaid-Verification header")
    current = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(verification_header)
    except jwt.PyJWTError as exc:
        raise WebhookRejectedError(f"Plaid-Verification is not a JWT: {exc}") from exc
    if header.get("alg") != "ES256":
        raise WebhookRejectedError(f"Plaid-Verification uses {header.get('alg')!r}, not ES256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise WebhookRejectedError("Plaid-Verification has no key id")
    jwk = keys.key_for(kid, current)
    public_key = ECAlgorithm.from_jwk(json.dumps({k: jwk[k] for k in ("kty", "crv", "x", "y")}))
    try:
        claims = jwt.decode(
            verification_header,
            key=public_key,  # type: ignore[arg-type]
            algorithms=["ES256"],
            # iat is checked below against the injectable clock; PyJWT would use time.time().
            options={"verify_iat": False, "require": ["iat", "request_body_sha256"]},
        )
    except jwt.PyJWTError as exc:
        raise WebhookRejectedError(f"invalid Plaid signature: {exc}") from exc
    issued_at = int(claims["iat"])
    if issued_at < current - MAX_TOKEN_AGE_S:
        raise WebhookRejectedError("Plaid-Verification was issued more than 5 minutes ago")
    body_hash = hashlib.sha256(raw_body).hexdigest()
    if not hmac.compare_digest(body_hash, str(claims["request_body_sha256"])):
        raise WebhookRejectedError("body does not match the signed request_body_sha256")
    try:
        payload = json.loads(raw_body)
        return PlaidWebhook(
            content_key=body_hash,
            webhook_type=str(payload["webhook_type"]),
            webhook_code=str(payload["webhook_code"]),
            item_id=payload.get("item_id"),
            issued_at=issued_at,
            payload=payload,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookRejectedError(f"body is not a Plaid webhook: {exc}") from exc
