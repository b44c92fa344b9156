import hashlib
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ledger_assets.lib.webhooks.plaid_verification import PlaidKeyCache, verify_plaid_webhook
from ledger_assets.lib.webhooks.rejection import WebhookRejectedError

KID = "kid-1"
PRIVATE = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
BODY = json.dumps(
    {"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE", "item_id": "it_1"}
).encode()


def jwk(expired_at: float | None = None) -> dict[str, Any]:
    key: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(PRIVATE.public_key()))
    return key | {"kid": KID, "alg": "ES256", "use": "sig", "expired_at": expired_at}


# A fixed clock: tokens made at collection time must not age while the suite runs.
NOW = 1_750_000_000.0


def token(body: bytes = BODY, iat: float | None = None, key: Any = PRIVATE, **headers: Any) -> str:
    claims = {
        "iat": int(iat if iat is not None else NOW),
        "request_body_sha256": hashlib.sha256(body).hexdigest(),
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID, **headers})


def cache(key: dict[str, Any] | None = None) -> PlaidKeyCache:
    calls: list[str] = []

    def fetch(kid: str) -> dict[str, Any] | None:
        calls.append(kid)
        return (key or jwk()) if kid == KID else None

    keys = PlaidKeyCache(fetch)
    keys.calls = calls  # type: ignore[attr-defined]
    return keys


def test_valid_webhook_and_key_is_fetched_once() -> None:
    keys = cache()
    first = verify_plaid_webhook(BODY, token(), keys, now=NOW)
    verify_plaid_webhook(BODY, token(), keys, now=NOW)
    assert (first.webhook_code, first.item_id) == ("SYNC_UPDATES_AVAILABLE", "it_1")
    assert first.content_key == hashlib.sha256(BODY).hexdigest()
    assert keys.calls == [KID]  # type: ignore[attr-defined]


def test_hs256_token_with_public_key_as_secret_is_rejected() -> None:
    forged = jwt.encode(
        {"iat": int(NOW), "request_body_sha256": "x"},
        "a-32-byte-secret-for-hs256-forge!",
        algorithm="HS256",
        headers={"kid": KID},
    )
    with pytest.raises(WebhookRejectedError, match="not ES256"):
        verify_plaid_webhook(BODY, forged, cache(), now=NOW)


@pytest.mark.parametrize(
    ("body", "header", "keys", "reason"),
    [
        (BODY, None, None, "missing Plaid-Verification"),
        (BODY, "not-a-jwt", None, "not a JWT"),
        (BODY, token(key=OTHER), None, "invalid Plaid signature"),
        (BODY, token(iat=NOW - 301), None, "more than 5 minutes ago"),
        (BODY + b" ", token(), None, "does not match the signed"),
        (BODY, token(), jwk(expired_at=NOW - 1), "has expired"),
        (
            BODY,
            jwt.encode({"iat": int(NOW)}, PRIVATE, algorithm="ES256", headers={"kid": "other"}),
            None,
            "unknown Plaid key id",
        ),
        (b"[]", token(b"[]"), None, "not a Plaid webhook"),
    ],
)
def test_bad_deliveries_are_rejected(
    body: bytes, header: str | None, keys: dict[str, Any] | None, reason: str
) -> None:
    with pytest.raises(WebhookRejectedError, match=reason):
        verify_plaid_webhook(body, header, cache(keys), now=NOW)
