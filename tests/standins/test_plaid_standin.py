"""The Plaid stand-in through the real ``plaid-python`` SDK over HTTP."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import plaid
import pytest
from plaid.api import plaid_api
from plaid.model.accounts_get_request import AccountsGetRequest
from plaid.model.transactions_sync_request import TransactionsSyncRequest

from ledger_assets.lib.money import exponent
from ledger_assets.lib.standins import (
    DEFAULT_PLAID_CLIENT_ID,
    DEFAULT_PLAID_SECRET,
    StandinServers,
)
from ledger_assets.lib.standins.plaid_store import decimal_literal
from tests.standins import expected
from tests.standins.conftest import Clock, small_spec

MUTATION = "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"


def api(servers: StandinServers) -> plaid_api.PlaidApi:
    cfg = plaid.Configuration(
        host=servers.plaid_url,
        api_key={"clientId": DEFAULT_PLAID_CLIENT_ID, "secret": DEFAULT_PLAID_SECRET},
    )
    return plaid_api.PlaidApi(plaid.ApiClient(cfg))


def sync_page(client: plaid_api.PlaidApi, token: str, cursor: str, count: int) -> dict[str, Any]:
    """One page through the SDK, body parsed with Decimal (the SDK's floats would lose cents)."""
    request = TransactionsSyncRequest(
        access_token=token, count=count, **({"cursor": cursor} if cursor else {})
    )
    # The validated model first (the SDK must accept the shape), then the exact raw body.
    client.transactions_sync(request)
    raw = client.transactions_sync(request, _preload_content=False)
    body: dict[str, Any] = json.loads(raw.data, parse_float=Decimal)
    return body


def sync_all(
    client: plaid_api.PlaidApi, token: str, cursor: str = "", count: int = 100
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], str, int]:
    added: list[dict[str, Any]] = []
    modified: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    pages = 0
    while True:
        body = sync_page(client, token, cursor, count)
        pages += 1
        added += body["added"]
        modified += body["modified"]
        removed += body["removed"]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return added, modified, removed, cursor, pages


def error_code(exc: plaid.ApiException) -> str:
    code: str = json.loads(exc.body)["error_code"]
    return code


def test_full_sync_equals_the_generators_transactions(pristine: StandinServers) -> None:
    client = api(pristine)
    want = {
        r["transaction_id"]: r
        for tables in expected.rows(small_spec()).values()
        for r in tables["plaid_transactions"]
    }
    got: dict[str, dict[str, Any]] = {}
    for item in pristine.plaid_items():
        added, modified, removed, _, pages = sync_all(client, item["access_token"], count=100)
        assert pages > 1
        assert not modified
        assert not removed
        for tx in added:
            assert tx["account_id"] in item["account_ids"]
            got[tx["transaction_id"]] = tx
    assert set(got) == set(want)
    for tx_id, tx in got.items():
        row = want[tx_id]
        currency = row["currency"]
        assert tx["iso_currency_code"] == currency.upper()
        minor = Decimal(tx["amount"]).scaleb(exponent(currency))
        assert minor == row["amount_minor"], tx_id  # exact, Plaid's sign
        assert tx["date"] == (date(1970, 1, 1) + timedelta(days=row["date"])).isoformat()
        assert tx["pending"] == row["pending"]
        assert tx["pending_transaction_id"] == row["pending_transaction_id"]
        assert tx["personal_finance_category"]["detailed"] == row["category_detailed"]
        assert tx["merchant_name"] == row["merchant_name"]


def test_cursor_resume_replays_the_same_pages(pristine: StandinServers) -> None:
    client = api(pristine)
    token = pristine.plaid_items()[0]["access_token"]
    first = sync_page(client, token, "", 50)
    second = sync_page(client, token, first["next_cursor"], 50)
    again = sync_page(client, token, first["next_cursor"], 50)
    assert [t["transaction_id"] for t in second["added"]] == [
        t["transaction_id"] for t in again["added"]
    ]
    _, _, _, end, _ = sync_all(client, token)
    idle = sync_page(client, token, end, 500)
    assert idle["added"] == []
    assert idle["has_more"] is False
    assert idle["next_cursor"] == end


def test_errors_are_plaid_errors(pristine: StandinServers) -> None:
    client = api(pristine)
    with pytest.raises(plaid.ApiException) as bad_token:
        client.transactions_sync(TransactionsSyncRequest(access_token="access-sandbox-nope"))
    assert error_code(bad_token.value) == "INVALID_ACCESS_TOKEN"
    body = json.loads(bad_token.value.body)
    assert {"error_type", "error_code", "error_message", "display_message", "request_id"} <= set(
        body
    )
    token = pristine.plaid_items()[0]["access_token"]
    try:
        pristine.plaid_fault(status=500, count=1, path_prefix="/transactions/sync")
        with pytest.raises(plaid.ApiException) as failed:
            client.transactions_sync(TransactionsSyncRequest(access_token=token))
        assert failed.value.status == 500
    finally:
        pristine.clear_faults()
    accounts = client.accounts_get(AccountsGetRequest(access_token=token))
    assert accounts.item.item_id == pristine.plaid_items()[0]["item_id"]


def test_injected_mutation_during_pagination_and_restart(pristine: StandinServers) -> None:
    client = api(pristine)
    item = pristine.plaid_items()[1]
    token = item["access_token"]
    reference = sync_all(client, token, count=100)
    try:
        pristine.plaid_fault(mutation_page=2, item_id=item["item_id"])
        first = sync_page(client, token, "", 100)
        assert first["has_more"]
        with pytest.raises(plaid.ApiException) as mutated:
            sync_page(client, token, first["next_cursor"], 100)
        assert mutated.value.status == 400
        assert error_code(mutated.value) == MUTATION
        assert json.loads(mutated.value.body)["error_type"] == "TRANSACTIONS_ERROR"
    finally:
        pristine.clear_faults()
    # Restarting from the original cursor gives the whole update.
    restarted = sync_all(client, token, count=100)
    assert [t["transaction_id"] for t in restarted[0]] == [
        t["transaction_id"] for t in reference[0]
    ]


def test_pending_posts_and_data_changing_mid_pagination() -> None:
    with StandinServers.start(small_spec(), clock=Clock()) as servers:
        client = api(servers)
        tokens = [i["access_token"] for i in servers.plaid_items()]
        cursors = {t: sync_all(client, t)[3] for t in tokens}
        pending_before = {
            tx["transaction_id"] for t in tokens for tx in sync_all(client, t)[0] if tx["pending"]
        }
        servers.tick(12)
        removed_ids: set[str] = set()
        posted: dict[str, dict[str, Any]] = {}
        for token in tokens:
            added, _, removed, _, _ = sync_all(client, token, cursors[token])
            removed_ids |= {r["transaction_id"] for r in removed}
            posted |= {t["pending_transaction_id"]: t for t in added if not t["pending"]}
        assert removed_ids, "live ticks post pending transactions"
        for pending_id in removed_ids:
            assert pending_id in posted, "a removed pending transaction comes back posted"
            assert posted[pending_id]["pending"] is False
        assert removed_ids & pending_before, "the history's pending transactions post too"

        # The log changing between two pages of one pagination is Plaid's mutation error.
        token = tokens[0]
        first = sync_page(client, token, "", 50)
        servers.tick(6)
        with pytest.raises(plaid.ApiException) as mutated:
            sync_page(client, token, first["next_cursor"], 50)
        assert error_code(mutated.value) == MUTATION


@pytest.mark.parametrize(
    ("minor", "exp", "text"),
    [
        (1230, 2, "12.3"),
        (-29, 2, "-0.29"),
        (5125, 3, "5.125"),
        (5120, 3, "5.12"),
        (1500, 0, "1500"),
        (100, 2, "1"),
        (1, 2, "0.01"),
        (0, 2, "0"),
    ],
)
def test_decimal_literals_are_exact(minor: int, exp: int, text: str) -> None:
    assert decimal_literal(minor, exp) == text
    assert Decimal(text).scaleb(exp) == minor
