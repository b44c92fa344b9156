"""The webhook endpoints over real HTTP: verified events land once; bad ones get a clear 4xx."""

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import stripe
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ledger_assets.lib.webhooks.receiver import ReceiverConfig, build_receiver
from tests.http_server import serve
from tests.ingest import factories as f

SECRET = "whsec_receiver_test"
KID = "plaid-kid"
PLAID_KEY = ec.generate_private_key(ec.SECP256R1())
JWK = json.loads(ECAlgorithm.to_jwk(PLAID_KEY.public_key())) | {"kid": KID, "expired_at": None}


@pytest.fixture
def receiver(migrated_dsn: str) -> Iterator[tuple[str, str]]:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        f.tenant(conn)
        conn.execute(
            "insert into ledger.plaid_items (item_id, tenant_id, institution_id, "
            "institution_name) values ('item_1', 1, 'ins_1', 'Bank')"
        )
    config = ReceiverConfig(migrated_dsn, SECRET, lambda kid: JWK if kid == KID else None)
    with serve(build_receiver(config)) as url:
        yield url, migrated_dsn


def stripe_delivery(
    event: dict[str, Any], secret: str = SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=at or int(time.time())
    )
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}


def plaid_delivery(
    payload: dict[str, Any], iat: float | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    token = jwt.encode(
        {"iat": int(iat or time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()},
        PLAID_KEY, algorithm="ES256", headers={"kid": KID},
    )  # fmt: skip
    return body, {"Plaid-Verification": token, "Content-Type": "application/json"}


EVENT = {"id": "evt_1", "object": "event", "type": "charge.succeeded", "created": f.T0,
         "account": "acct_1", "data": {"object": f.charge()}}  # fmt: skip
PLAID = {"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
         "item_id": "item_1", "initial_update_complete": True}  # fmt: skip


def inbox(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select provider, event_key, tenant_id from ledger.webhook_inbox order by inbox_id"
        ).fetchall()


def test_stripe_event_lands_once(receiver: tuple[str, str]) -> None:
    url, dsn = receiver
    body, headers = stripe_delivery(EVENT)
    first = httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers)
    again = httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers)
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert inbox(dsn) == [("stripe", "evt_1", 1)]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (
            lambda b, h: (
                b,
                {**h, "Stripe-Signature": stripe_delivery(EVENT, "whsec_x")[1]["Stripe-Signature"]},
            ),
            "invalid Stripe signature",
        ),
        (lambda b, h: (b.replace(b"1000", b"9000"), h), "invalid Stripe signature"),
        (lambda b, h: stripe_delivery(EVENT, at=int(time.time()) - 600), "older than"),
        (lambda b, h: (b, {"Content-Type": "application/json"}), "missing Stripe-Signature"),
    ],
)
def test_bad_stripe_deliveries_get_400_and_write_nothing(
    receiver: tuple[str, str], mangle: Any, reason: str
) -> None:
    url, dsn = receiver
    body, headers = mangle(*stripe_delivery(EVENT))
    response = httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert inbox(dsn) == []


def test_stripe_event_for_unknown_account_is_422_and_kept(receiver: tuple[str, str]) -> None:
    url, dsn = receiver
    body, headers = stripe_delivery(EVENT | {"account": "acct_404"})
    response = httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 422
    with psycopg.connect(dsn) as conn:
        kept = conn.execute("select record_key, reason from ledger.quarantine").fetchall()
    assert kept == [("evt_1", "webhook for unknown Stripe account 'acct_404'")]
    assert inbox(dsn) == []


def test_plaid_webhook_lands_once_by_content_key(receiver: tuple[str, str]) -> None:
    url, dsn = receiver
    body, headers = plaid_delivery(PLAID)
    assert httpx.post(f"{url}/webhooks/plaid", content=body, headers=headers).status_code == 200
    retry = plaid_delivery(PLAID)  # Plaid's retry: same body, a fresh token
    assert httpx.post(f"{url}/webhooks/plaid", content=retry[0], headers=retry[1]).json() == {
        "received": True, "duplicate": True,
    }  # fmt: skip
    assert inbox(dsn) == [("plaid", hashlib.sha256(body).hexdigest() + ":0", 1)]
    # Once that notice was served by a sync, the same body is a new notice.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("update ledger.webhook_inbox set status = 'applied'")
    later = plaid_delivery(PLAID)
    assert httpx.post(f"{url}/webhooks/plaid", content=later[0], headers=later[1]).json() == {
        "received": True, "duplicate": False,
    }  # fmt: skip
    assert len(inbox(dsn)) == 2


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        (lambda: plaid_delivery(PLAID, iat=time.time() - 400), 400, "more than 5 minutes"),
        (
            lambda: (plaid_delivery(PLAID)[0] + b" ", plaid_delivery(PLAID)[1]),
            400,
            "does not match",
        ),
        (lambda: plaid_delivery(PLAID | {"item_id": "item_404"}), 422, "unknown Plaid item"),
    ],
)
def test_bad_plaid_deliveries(
    receiver: tuple[str, str], make: Any, status: int, reason: str
) -> None:
    url, dsn = receiver
    body, headers = make()
    response = httpx.post(f"{url}/webhooks/plaid", content=body, headers=headers)
    assert response.status_code == status
    assert reason in response.json()["error"]
    assert inbox(dsn) == []
