import json

import pytest
import stripe

from ledger_assets.lib.webhooks.rejection import WebhookRejectedError
from ledger_assets.lib.webhooks.stripe_signature import verify_stripe_event

SECRET = "whsec_test_secret"
BODY = json.dumps(
    {
        "id": "evt_1",
        "object": "event",
        "type": "charge.dispute.created",
        "created": 1_700_000_000,
        "account": "acct_7",
        "data": {"object": {"id": "dp_1", "object": "dispute", "amount": 500}},
    }
).encode()


# A fixed clock: signatures made at collection time must not age while the suite runs.
NOW = 1_750_000_000


def sign(body: bytes, secret: str = SECRET, at: int = NOW) -> str:
    return stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=at)


def test_valid_delivery_is_parsed() -> None:
    event = verify_stripe_event(BODY, sign(BODY), SECRET, now=NOW)
    assert (event.id, event.type, event.account) == ("evt_1", "charge.dispute.created", "acct_7")
    assert event.object["id"] == "dp_1"
    assert event.created.timestamp() == 1_700_000_000


def test_rotated_secret_signature_passes() -> None:
    header = sign(BODY, "whsec_old") + "," + sign(BODY).split(",")[1]
    assert verify_stripe_event(BODY, header, SECRET, now=NOW).id == "evt_1"


@pytest.mark.parametrize(
    ("body", "header", "reason"),
    [
        (BODY, None, "missing Stripe-Signature"),
        (BODY, sign(BODY, "whsec_forged"), "invalid Stripe signature"),
        (BODY.replace(b"500", b"900"), sign(BODY), "invalid Stripe signature"),
        (BODY, sign(BODY, at=NOW - 301), "older than 300 s"),
        (BODY, sign(BODY, at=NOW + 3600), "dated in the future"),
        (BODY, "garbage", "invalid Stripe signature"),
        (b'{"id": "evt_2"}', sign(b'{"id": "evt_2"}'), "not a Stripe event"),
        (b"\xff\xfe", "t=1,v1=00", "invalid Stripe signature"),
    ],
)
def test_bad_deliveries_are_rejected(body: bytes, header: str | None, reason: str) -> None:
    with pytest.raises(WebhookRejectedError, match=reason):
        verify_stripe_event(body, header, SECRET, now=NOW)
