"""Verify a Stripe webhook delivery and parse its event.

Verification is the Stripe SDK's own (`stripe.WebhookSignature.verify_header`): HMAC-SHA256 of
``f"{t}.{raw_body}"`` keyed with the whole ``whsec_...`` secret, any matching ``v1`` signature
accepted (secret rotation), constant-time comparison. The SDK only rejects timestamps that are
too *old*; a signature dated in the future would pass, so this module also bounds clock skew
the other way, because a captured request signed "in the future" could otherwise be replayed
for as long as the attacker likes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe

from ledger_assets.lib.webhooks.rejection import WebhookRejectedError

#: Stripe's default tolerance for old signatures (``stripe.Webhook.DEFAULT_TOLERANCE``).
DEFAULT_TOLERANCE_S = 300
#: How far in the future a signature timestamp may be (clock skew between Stripe and us).
MAX_FUTURE_SKEW_S = 60


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: datetime
    account: str | None
    object: dict[str, Any]
    payload: dict[str, Any]


def _signature_timestamp(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t" and value.strip().isdigit():
            return int(value)
    raise WebhookRejectedError("Stripe-Signature has no timestamp")


def verify_stripe_event(
    raw_body: bytes,
    signature_header: str | None,
    secret: str,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> StripeEvent:
    """Check the signature of one delivery and return its event.

    Args:
        raw_body: the request body exactly as received (never re-serialized JSON).
        signature_header: the ``Stripe-Signature`` header value.
        secret: the endpoint's signing secret.
        tolerance_s: the oldest acceptable signature age.
        now: the current time, for tests.

    Raises:
        WebhookRejectedError: missing, forged, expired or future-dated signature, or a body that is
            not a Stripe event.
    """
    if not signature_header:
        raise WebhookRejectedError("missing Stripe-Signature header")
    current = time.time() if now is None else now
    try:
        payload_text = raw_body.decode("utf-8")
        stripe.WebhookSignature.verify_header(payload_text, signature_header, secret, tolerance=0)
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise WebhookRejectedError(f"invalid Stripe signature: {exc}") from exc
    # Age bounds are checked here rather than by the SDK so that `now` is injectable and the
    # future bound exists at all.
    signed_at = _signature_timestamp(signature_header)
    if signed_at < current - tolerance_s:
        raise WebhookRejectedError(f"Stripe signature is older than {tolerance_s} s (replay?)")
    if signed_at > current + MAX_FUTURE_SKEW_S:
        raise WebhookRejectedError("Stripe signature is dated in the future")
    try:
        payload = json.loads(payload_text)
        event = StripeEvent(
            id=str(payload["id"]),
            type=str(payload["type"]),
            created=datetime.fromtimestamp(int(payload["created"]), tz=UTC),
            account=payload.get("account"),
            object=dict(payload["data"]["object"]),
            payload=payload,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookRejectedError(f"body is not a Stripe event: {exc}") from exc
    if not event.id.startswith("evt_"):
        raise WebhookRejectedError(f"event id {event.id!r} is not a Stripe event id")
    return event
