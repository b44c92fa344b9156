"""The Stripe stand-in through the real ``stripe`` SDK over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import stripe

from ledger_assets.lib.standins import DEFAULT_STRIPE_API_KEY, StandinServers
from tests.standins import expected
from tests.standins.conftest import NOW, Clock, small_spec

RESOURCES = {
    "charges": "stripe_charges",
    "refunds": "stripe_refunds",
    "disputes": "stripe_disputes",
    "payouts": "stripe_payouts",
    "balance_transactions": "stripe_balance_transactions",
}


def client(servers: StandinServers, retries: int = 0, **kwargs: Any) -> stripe.StripeClient:
    return stripe.StripeClient(
        DEFAULT_STRIPE_API_KEY,
        base_addresses={"api": servers.stripe_url},
        max_network_retries=retries,
        **kwargs,
    )


def raw_list(c: stripe.StripeClient, resource: str, account: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        c.raw_request("get", f"/v1/{resource}", stripe_account=account, **params).body
    )
    return body


ACCOUNTS = list(expected.rows(small_spec()))


@pytest.mark.parametrize("resource", list(RESOURCES))
def test_auto_paging_returns_the_generators_rows_newest_first(
    pristine: StandinServers, resource: str
) -> None:
    c = client(pristine)
    for account in ACCOUNTS:
        want = expected.newest_first(expected.rows(small_spec())[account][RESOURCES[resource]])
        listed = getattr(c.v1, resource).list(
            params={"limit": 100}, options={"stripe_account": account}
        )
        got = [obj.to_dict() for obj in listed.auto_paging_iter()]
        assert [g["id"] for g in got] == [w["id"] for w in want]
        for g, w in zip(got, want, strict=True):
            assert g["object"] == expected_object(resource)
            for name in ("amount", "created", "currency", "status"):
                if name in w:
                    assert g[name] == w[name], (resource, g["id"], name)
            check_fields(resource, g, w)


def expected_object(resource: str) -> str:
    return {
        "charges": "charge",
        "refunds": "refund",
        "disputes": "dispute",
        "payouts": "payout",
        "balance_transactions": "balance_transaction",
    }[resource]


def check_fields(resource: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    if resource == "charges":
        for name in (
            "amount_captured",
            "amount_refunded",
            "paid",
            "captured",
            "refunded",
            "disputed",
            "balance_transaction",
            "payment_intent",
            "customer",
            "description",
        ):
            assert got[name] == want[name], name
    elif resource == "refunds":
        assert (got["charge"], got["reason"], got["balance_transaction"]) == (
            want["charge"],
            want["reason"],
            want["balance_transaction"],
        )
    elif resource == "disputes":
        assert got["charge"] == want["charge"]
        assert got["evidence_details"]["due_by"] == want["evidence_due_by"]
        assert [bt["id"] for bt in got["balance_transactions"]] == want["balance_transactions"]
        for bt in got["balance_transactions"]:
            assert bt["object"] == "balance_transaction"
            assert bt["net"] == bt["amount"] - bt["fee"]
    elif resource == "payouts":
        for name in ("arrival_date", "automatic", "balance_transaction", "reconciliation_status"):
            assert got[name] == want[name], name
    else:
        for name in ("fee", "net", "type", "reporting_category", "source", "available_on"):
            assert got[name] == want[name], name
        assert got["fee_details"] == json.loads(want["fee_details"])
        assert sum(f["amount"] for f in got["fee_details"]) == got["fee"]


def test_created_filters_and_cursors_match_a_sorted_slice(pristine: StandinServers) -> None:
    c = client(pristine)
    account = ACCOUNTS[1]
    rows = expected.newest_first(expected.rows(small_spec())[account]["stripe_charges"])
    lo, hi = rows[300]["created"], rows[100]["created"]
    want = [r["id"] for r in rows if lo <= r["created"] < hi]
    listed = c.v1.charges.list(
        params={"limit": 37, "created": {"gte": lo, "lt": hi}}, options={"stripe_account": account}
    )
    assert [ch.id for ch in listed.auto_paging_iter()] == want
    assert [
        ch.id
        for ch in c.v1.charges.list(
            params={"limit": 5, "created": {"gt": lo, "lte": hi}},
            options={"stripe_account": account},
        ).auto_paging_iter()
    ] == [r["id"] for r in rows if lo < r["created"] <= hi]

    page = raw_list(c, "charges", account, limit=10, starting_after=rows[49]["id"])
    assert [o["id"] for o in page["data"]] == [r["id"] for r in rows[50:60]]
    assert page["has_more"] is True
    assert page["url"] == "/v1/charges"
    before = raw_list(c, "charges", account, limit=10, ending_before=rows[49]["id"])
    assert [o["id"] for o in before["data"]] == [r["id"] for r in rows[39:49]]
    last = raw_list(c, "charges", account, limit=100, starting_after=rows[-3]["id"])
    assert [o["id"] for o in last["data"]] == [r["id"] for r in rows[-2:]]
    assert last["has_more"] is False


def test_percent_encoded_keys_on_the_wire(pristine: StandinServers) -> None:
    account = ACCOUNTS[0]
    rows = expected.newest_first(expected.rows(small_spec())[account]["stripe_charges"])
    gte = rows[20]["created"]
    request = urllib.request.Request(
        f"{pristine.stripe_url}/v1/charges?limit=100&created%5Bgte%5D={gte}",
        headers={"Authorization": f"Bearer {DEFAULT_STRIPE_API_KEY}", "Stripe-Account": account},
    )
    with urllib.request.urlopen(request) as response:
        body = json.loads(response.read())
    assert [o["id"] for o in body["data"]] == [r["id"] for r in rows if r["created"] >= gte]


def test_endpoint_filters(pristine: StandinServers) -> None:
    c = client(pristine)
    account = ACCOUNTS[2]
    data = expected.rows(small_spec())[account]
    refund = data["stripe_refunds"][0]
    got = raw_list(c, "refunds", account, charge=refund["charge"], limit=100)["data"]
    assert {o["id"] for o in got} == {
        r["id"] for r in data["stripe_refunds"] if r["charge"] == refund["charge"]
    }
    dispute = data["stripe_disputes"][0]
    got = raw_list(c, "disputes", account, charge=dispute["charge"])["data"]
    assert [o["id"] for o in got] == [dispute["id"]]
    payout = data["stripe_payouts"][5]["id"]
    swept = [r for r in data["stripe_balance_transactions"] if r["payout"] == payout]
    listed = c.v1.balance_transactions.list(
        params={"payout": payout, "limit": 100}, options={"stripe_account": account}
    )
    got_bts = list(listed.auto_paging_iter())
    assert sorted(bt.id for bt in got_bts) == sorted(r["id"] for r in swept)
    assert sum(bt.net for bt in got_bts) == data["stripe_payouts"][5]["amount"]
    refunds_only = raw_list(c, "balance_transactions", account, type="refund", limit=100)["data"]
    assert refunds_only
    assert {o["type"] for o in refunds_only} == {"refund"}


def test_retrieve_and_scoping(pristine: StandinServers) -> None:
    c = client(pristine)
    account, other = ACCOUNTS[0], ACCOUNTS[1]
    dispute = expected.rows(small_spec())[account]["stripe_disputes"][0]
    got = c.v1.disputes.retrieve(dispute["id"], options={"stripe_account": account})
    assert isinstance(got, stripe.Dispute)
    assert got.charge == dispute["charge"]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        c.v1.disputes.retrieve(dispute["id"], options={"stripe_account": other})
    assert missing.value.http_status == 404
    # The platform (no Stripe-Account) owns no charges.
    assert c.v1.charges.list(params={"limit": 3}).data == []
    with pytest.raises(stripe.PermissionError):
        c.v1.charges.list(options={"stripe_account": "acct_nobody00000"})
    accounts = c.v1.accounts.list(params={"limit": 100})
    assert sorted(a.id for a in accounts.data) == sorted(ACCOUNTS)


def test_bad_requests_are_stripe_errors(pristine: StandinServers) -> None:
    bad_key = stripe.StripeClient("sk_test_wrong", base_addresses={"api": pristine.stripe_url})
    with pytest.raises(stripe.AuthenticationError):
        bad_key.v1.charges.list(options={"stripe_account": ACCOUNTS[0]})
    c = client(pristine)
    with pytest.raises(stripe.InvalidRequestError) as limit:
        c.v1.charges.list(params={"limit": 101}, options={"stripe_account": ACCOUNTS[0]})
    assert limit.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError):
        c.v1.charges.list(
            params={"starting_after": "ch_zzzzzzzzzz"}, options={"stripe_account": ACCOUNTS[0]}
        )


def test_events_reach_back_30_days_with_snapshots() -> None:
    clock = Clock()
    with StandinServers.start(small_spec(), clock=clock) as servers:
        c = client(servers)
        account = ACCOUNTS[0]
        events = list(
            c.v1.events.list(
                params={"limit": 100}, options={"stripe_account": account}
            ).auto_paging_iter()
        )
        assert events
        assert all(NOW - 30 * 86_400 <= e.created < NOW for e in events)
        created = [(e.created, e.id) for e in events]
        assert created == sorted(created, reverse=True)
        kinds = {e.type for e in events}
        assert {"charge.succeeded", "payout.paid", "refund.created", "charge.refunded"} <= kinds
        succeeded = next(e for e in events if e.type == "charge.succeeded")
        assert isinstance(succeeded.data.object, stripe.Charge)
        assert succeeded.data.object.amount_refunded == 0  # the snapshot at creation
        only = c.v1.events.list(
            params={"types": ["refund.created"], "limit": 100}, options={"stripe_account": account}
        )
        assert only.data
        assert {e.type for e in only.data} == {"refund.created"}
        wildcard = raw_list(c, "events", account, type="charge.dispute.*", limit=100)["data"]
        assert all(e["type"].startswith("charge.dispute.") for e in wildcard)
        oldest = events[-1]
        assert c.v1.events.retrieve(oldest.id, options={"stripe_account": account}).id == oldest.id
        clock.now += 2 * 86_400  # the oldest events fall out of retention
        later = list(
            c.v1.events.list(
                params={"limit": 100}, options={"stripe_account": account}
            ).auto_paging_iter()
        )
        assert len(later) < len(events)
        assert all(e.created >= clock.now - 30 * 86_400 for e in later)
        with pytest.raises(stripe.InvalidRequestError):
            c.v1.events.retrieve(oldest.id, options={"stripe_account": account})


def test_injected_429_and_500_surface_and_retry(pristine: StandinServers) -> None:
    account = ACCOUNTS[0]
    options: Any = {"stripe_account": account}
    try:
        pristine.stripe_fault(status=429, count=1, path_prefix="/v1/charges")
        with pytest.raises(stripe.RateLimitError) as limited:
            client(pristine).v1.charges.list(options=options)
        assert limited.value.http_status == 429
        assert limited.value.headers["Stripe-Should-Retry"] == "true"
        pristine.stripe_fault(status=500, count=1, path_prefix="/v1/charges")
        with pytest.raises(stripe.APIError) as failed:
            client(pristine).v1.charges.list(options=options)
        assert failed.value.http_status == 500
        # Other paths are untouched; with retries configured the SDK gets through.
        pristine.stripe_fault(status=429, count=1, path_prefix="/v1/refunds")
        pristine.stripe_fault(status=500, count=1, path_prefix="/v1/refunds")
        assert client(pristine, retries=2).v1.refunds.list(options=options).data
        pristine.stripe_fault(delay_s=1.0, count=1, path_prefix="/v1/payouts")
        slow = client(pristine, http_client=stripe.RequestsClient(timeout=0.3))
        with pytest.raises(stripe.APIConnectionError):
            slow.v1.payouts.list(options=options)
    finally:
        pristine.clear_faults()
