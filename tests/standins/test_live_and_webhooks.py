"""Live activity and signed, imperfect webhook delivery."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import Any

import jwt
import plaid
import stripe
from jwt.algorithms import ECAlgorithm
from plaid.api import plaid_api
from plaid.model.webhook_verification_key_get_request import WebhookVerificationKeyGetRequest

from ledger_assets.lib.standins import (
    DEFAULT_PLAID_CLIENT_ID,
    DEFAULT_PLAID_SECRET,
    DEFAULT_STRIPE_API_KEY,
    DEFAULT_STRIPE_WEBHOOK_SECRET,
    StandinServers,
)
from ledger_assets.lib.standins.server import Runtime, StandinConfig
from ledger_assets.lib.standins.webhooks import DeliveryPolicy
from ledger_assets.lib.webhooks.plaid_verification import PlaidKeyCache, verify_plaid_webhook
from tests.standins.conftest import NOW, Clock, Received, small_spec

FAST = DeliveryPolicy(seed=5, duplicate_share=0.3, delay_share=0.3, max_delay_s=0.5)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_stripe_webhooks_are_signed_duplicated_and_reordered(
    receiver: tuple[str, Received],
) -> None:
    url, received = receiver
    clock = Clock()
    with StandinServers.start(
        small_spec(), clock=clock, delivery=FAST, stripe_webhook_url=f"{url}/stripe"
    ) as servers:
        servers.tick(8)
        assert servers.runtime is not None
        deliverer = servers.runtime.deliverer
        wait_for(lambda: deliverer.pending == 0 and len(received.of("/stripe")) >= 20)
        deliveries = received.of("/stripe")
        events = []
        for headers, body in deliveries:
            event = stripe.Webhook.construct_event(
                body, headers["Stripe-Signature"], DEFAULT_STRIPE_WEBHOOK_SECRET
            )
            events.append(event)
        ids = [e.id for e in events]
        assert Counter(ids).most_common(1)[0][1] >= 2, "some events arrive twice"
        first_seen = list(dict.fromkeys(ids))
        assert first_seen != sorted(first_seen), "some events arrive out of order"
        kinds = {e.type for e in events}
        assert {"charge.succeeded", "refund.created", "charge.refunded"} <= kinds
        assert "charge.dispute.created" in kinds
        assert "charge.dispute.funds_withdrawn" in kinds
        # Every delivered event is also listed by the API, with the same body.
        c = stripe.StripeClient(DEFAULT_STRIPE_API_KEY, base_addresses={"api": servers.stripe_url})
        event = events[0]
        listed = c.raw_request("get", f"/v1/events/{event.id}", stripe_account=event.account)
        assert json.loads(listed.body) == event.to_dict()
        tampered = deliveries[0][1].replace(b'"livemode":false', b'"livemode":true ')
        try:
            stripe.Webhook.construct_event(
                tampered, deliveries[0][0]["Stripe-Signature"], DEFAULT_STRIPE_WEBHOOK_SECRET
            )
        except stripe.SignatureVerificationError:
            pass
        else:
            raise AssertionError("a body altered after signing must not verify")


def test_late_dispute_story_over_ticks() -> None:
    with StandinServers.start(small_spec(), clock=Clock()) as servers:
        c = stripe.StripeClient(DEFAULT_STRIPE_API_KEY, base_addresses={"api": servers.stripe_url})
        servers.tick(30)
        closed = []
        for tenant in servers.runtime.world.tenants.values() if servers.runtime else []:
            events = c.v1.events.list(
                params={"type": "charge.dispute.*", "limit": 100, "created": {"gte": NOW}},
                options={"stripe_account": tenant.account_id},
            )
            for event in events.data:
                dispute = event.data.object
                charge = c.v1.charges.retrieve(
                    dispute.charge, options={"stripe_account": tenant.account_id}
                )
                age_days = (dispute.created - charge.created) / 86_400
                assert 90 <= age_days <= 180, "live disputes are late"
                assert charge.disputed
                if event.type == "charge.dispute.closed":
                    closed.append(dispute)
        assert closed, "30 ticks decide some late disputes"
        for dispute in closed:
            assert dispute.status in ("won", "lost")
            bts = dispute.balance_transactions
            assert len(bts) == (2 if dispute.status == "won" else 1)
            assert bts[0].amount == -dispute.amount
            if dispute.status == "won":
                assert bts[1].amount == dispute.amount
                assert bts[1].reporting_category == "dispute_reversal"


def test_plaid_webhooks_carry_a_verifiable_es256_jwt(receiver: tuple[str, Received]) -> None:
    url, received = receiver
    with StandinServers.start(
        small_spec(), clock=Clock(), delivery=FAST, plaid_webhook_url=f"{url}/plaid"
    ) as servers:
        servers.tick(3)
        wait_for(lambda: len(received.of("/plaid")) >= 3)
        cfg = plaid.Configuration(
            host=servers.plaid_url,
            api_key={"clientId": DEFAULT_PLAID_CLIENT_ID, "secret": DEFAULT_PLAID_SECRET},
        )
        client = plaid_api.PlaidApi(plaid.ApiClient(cfg))
        items = {i["item_id"] for i in servers.plaid_items()}
        for headers, body in received.of("/plaid"):
            token = headers["Plaid-Verification"]
            header = jwt.get_unverified_header(token)
            assert header["alg"] == "ES256"
            key = client.webhook_verification_key_get(
                WebhookVerificationKeyGetRequest(key_id=header["kid"])
            ).key.to_dict()
            assert (key["alg"], key["crv"], key["kty"], key["use"]) == (
                "ES256",
                "P-256",
                "EC",
                "sig",
            )
            public = ECAlgorithm.from_jwk(json.dumps({k: key[k] for k in ("kty", "crv", "x", "y")}))
            claims = jwt.decode(token, public, algorithms=["ES256"])  # type: ignore[arg-type]
            assert claims["request_body_sha256"] == hashlib.sha256(body).hexdigest()
            assert abs(claims["iat"] - time.time()) < 60
            payload = json.loads(body)
            assert payload["webhook_code"] == "SYNC_UPDATES_AVAILABLE"
            assert payload["item_id"] in items
            # The project's own verifier accepts it too.
            keys = PlaidKeyCache(lambda kid, key=key: key if kid == key["kid"] else None)
            assert verify_plaid_webhook(body, token, keys).item_id == payload["item_id"]


def test_same_seed_same_history_and_same_live_changes() -> None:
    def run(seed: int) -> list[bytes]:
        runtime = Runtime(StandinConfig(spec=small_spec(seed)), clock=Clock())
        runtime.tick(10)
        bodies: list[bytes] = []
        for account in runtime.world.accounts.values():
            bodies += account.tables["events"]["body"].tolist()
            for name in ("charges", "disputes", "balance_transactions"):
                table = account.tables[name]
                bodies += runtime.world.renderer.render(
                    account, name, table.take(range(len(table)))
                )
        return bodies

    first = run(11)
    assert first == run(11)
    assert first != run(12)
