"""Plaid ``/transactions/sync`` into the system of record, one item at a time, all or nothing.

One sync of an item runs in one database transaction: every page is merged as it arrives
(memory stays at one page), removals are applied, accounts are upserted, and the new cursor is
written last. If Plaid answers ``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION`` the transaction
is rolled back — discarding the partial pages, as Plaid requires — and the loop restarts from
the original cursor, a bounded number of times.

Amounts: plaid-python parses ``amount`` as a float, and ``int(0.29 * 100) == 28``. Responses are
therefore read raw (``_preload_content=False``) and parsed with ``parse_float=Decimal``, so
amounts stay exact decimals; the minor-unit value is derived with the currency's exponent,
rounded half-even at that boundary (the exact decimal is kept beside it).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import plaid
import psycopg
from plaid.api import plaid_api
from plaid.model.transactions_sync_request import TransactionsSyncRequest
from plaid.model.webhook_verification_key_get_request import WebhookVerificationKeyGetRequest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator
from urllib3.util.retry import Retry

from ledger_assets.lib.ingest.quarantine import Rejection, quarantine
from ledger_assets.lib.ingest.tables import PLAID_ACCOUNTS, PLAID_TRANSACTIONS
from ledger_assets.lib.ingest.upsert import MergeCounts, merge_rows
from ledger_assets.lib.money import CURRENCY_EXPONENTS, to_minor

MUTATION_DURING_PAGINATION = "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"
PAGE_COUNT = 500  # Plaid's maximum


class SyncRestartsExhaustedError(RuntimeError):
    """The item kept changing during pagination; the cursor was left where it was."""


@dataclass(frozen=True)
class PlaidItem:
    item_id: str
    tenant_id: int
    access_token: str


@dataclass
class SyncReport:
    item_id: str
    pages: int = 0
    restarts: int = 0
    added: int = 0
    modified: int = 0
    removed: int = 0
    accounts: MergeCounts = field(default_factory=MergeCounts)
    transactions: MergeCounts = field(default_factory=MergeCounts)
    quarantined: int = 0
    cursor_before: str | None = None
    cursor_after: str | None = None
    seconds: float = 0.0


def make_client(host: str, client_id: str, secret: str, retries: int = 3) -> plaid_api.PlaidApi:
    """A Plaid client with explicit retries on 429 and 5xx (sync requests are idempotent)."""
    configuration = plaid.Configuration(
        host=host, api_key={"clientId": client_id, "secret": secret}
    )
    configuration.retries = Retry(
        total=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # POST included: /transactions/sync does not mutate
        raise_on_status=False,
    )
    return plaid_api.PlaidApi(plaid.ApiClient(configuration))


class PlaidTransaction(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    amount: Decimal
    iso_currency_code: str | None
    unofficial_currency_code: str | None = None
    date: dt.date
    authorized_date: dt.date | None = None
    datetime: dt.datetime | None = None
    authorized_datetime: dt.datetime | None = None
    name: str | None = None
    merchant_name: str | None = None
    payment_channel: str
    personal_finance_category: dict[str, Any] | None = None
    pending: StrictBool
    pending_transaction_id: str | None = None
    transaction_code: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        if isinstance(value, float):
            raise ValueError("amount arrived as a float; parse with Decimal")
        return value

    @property
    def currency(self) -> str:
        if self.iso_currency_code is None:
            raise ValueError(
                f"unofficial currency {self.unofficial_currency_code!r} is not supported"
            )
        code = self.iso_currency_code.lower()
        if code not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {code!r}")
        return code

    def row(self, tenant_id: int, item_id: str) -> tuple[object, ...]:
        category = self.personal_finance_category or {}
        return (
            self.transaction_id, tenant_id, item_id, self.account_id, self.amount,
            to_minor(self.amount, self.currency), self.currency, self.date, self.authorized_date,
            self.datetime, self.authorized_datetime, self.name, self.merchant_name,
            self.payment_channel, category.get("primary"), category.get("detailed"),
            self.pending, self.pending_transaction_id, self.transaction_code,
        )  # fmt: skip


class PlaidAccount(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    account_id: str
    name: str
    official_name: str | None = None
    mask: str | None = None
    type: str
    subtype: str | None = None
    balances: dict[str, Any]

    def row(self, tenant_id: int, item_id: str) -> tuple[object, ...]:
        code = str(self.balances.get("iso_currency_code") or "").lower()
        if code not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown account currency {code!r}")
        return (
            self.account_id, tenant_id, item_id, self.name, self.official_name, self.mask,
            self.type, self.subtype, code,
        )  # fmt: skip


class _Restart(Exception):  # noqa: N818 - control flow, never escapes this module
    pass


def _read_cursor(conn: psycopg.Connection[tuple[object, ...]], item: PlaidItem) -> str | None:
    # FOR UPDATE serializes two syncs of the same item (a webhook and the schedule).
    row = conn.execute(
        "select cursor_value from ledger.ingestion_cursors "
        "where provider = 'plaid' and stream = 'transactions' and scope = %s for update",
        (item.item_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def _call_sync(
    client: plaid_api.PlaidApi, item: PlaidItem, cursor: str | None, count: int
) -> dict[str, Any]:
    request = TransactionsSyncRequest(
        access_token=item.access_token, count=count, **({"cursor": cursor} if cursor else {})
    )
    try:
        response = client.transactions_sync(request, _preload_content=False)
    except plaid.ApiException as exc:
        body = json.loads(exc.body) if exc.body else {}
        if body.get("error_code") == MUTATION_DURING_PAGINATION:
            raise _Restart from exc
        raise
    parsed: dict[str, Any] = json.loads(response.data, parse_float=Decimal)
    return parsed


def sync_item(
    conn: psycopg.Connection[tuple[object, ...]],
    client: plaid_api.PlaidApi,
    item: PlaidItem,
    max_restarts: int = 5,
    page_count: int = PAGE_COUNT,
) -> SyncReport:
    """Bring one item's transactions up to date; the cursor moves only with the data.

    Raises:
        SyncRestartsExhaustedError: the item mutated during every one of ``max_restarts``
            attempts; nothing was written and the cursor is unchanged.
        plaid.ApiException: any other Plaid error (after the client's own retries).
    """
    started = time.monotonic()
    for attempt in range(max_restarts + 1):
        report = SyncReport(item.item_id, restarts=attempt)
        try:
            with conn.transaction():
                _sync_pages(conn, client, item, report, page_count)
        except _Restart:
            time.sleep(min(0.1 * 2**attempt, 2.0))
            continue
        report.seconds = time.monotonic() - started
        return report
    raise SyncRestartsExhaustedError(
        f"Plaid item {item.item_id} changed during pagination {max_restarts + 1} times; "
        "the cursor was kept and the next sync retries"
    )


def _sync_pages(
    conn: psycopg.Connection[tuple[object, ...]],
    client: plaid_api.PlaidApi,
    item: PlaidItem,
    report: SyncReport,
    page_count: int,
) -> None:
    cursor = report.cursor_before = _read_cursor(conn, item)
    while True:
        page = _call_sync(client, item, cursor, page_count)
        report.pages += 1
        _apply_page(conn, item, page, report)
        cursor = str(page["next_cursor"])
        if not page["has_more"]:
            break
    conn.execute(
        """
        insert into ledger.ingestion_cursors (provider, stream, scope, tenant_id, cursor_value)
        values ('plaid', 'transactions', %s, %s, %s)
        on conflict (provider, stream, scope) do update
            set cursor_value = excluded.cursor_value, updated_at = now()
        """,
        (item.item_id, item.tenant_id, cursor),
    )
    report.cursor_after = cursor


def _apply_page(
    conn: psycopg.Connection[tuple[object, ...]],
    item: PlaidItem,
    page: dict[str, Any],
    report: SyncReport,
) -> None:
    rejected: list[Rejection] = []
    accounts = []
    for raw in page.get("accounts", []):
        try:
            accounts.append(PlaidAccount.model_validate(raw).row(item.tenant_id, item.item_id))
        except (ValidationError, ValueError) as exc:
            rejected.append(Rejection("plaid", "account", raw.get("account_id"), str(exc),
                                      _jsonable(raw), item.tenant_id))  # fmt: skip
    report.accounts += merge_rows(conn, PLAID_ACCOUNTS, accounts)
    known_accounts = {
        str(r[0])
        for r in conn.execute(
            "select account_id from ledger.plaid_accounts where item_id = %s", (item.item_id,)
        ).fetchall()
    }
    rows = []
    for kind in ("added", "modified"):
        for raw in page.get(kind, []):
            try:
                txn = PlaidTransaction.model_validate(raw)
                if txn.account_id not in known_accounts:
                    raise ValueError(f"unknown account {txn.account_id} for item {item.item_id}")
                rows.append(txn.row(item.tenant_id, item.item_id))
            except (ValidationError, ValueError) as exc:
                rejected.append(Rejection("plaid", "transaction", raw.get("transaction_id"),
                                          str(exc), _jsonable(raw), item.tenant_id))  # fmt: skip
        report.added += len(page.get("added", [])) if kind == "added" else 0
        report.modified += len(page.get("modified", [])) if kind == "modified" else 0
    report.transactions += merge_rows(conn, PLAID_TRANSACTIONS, rows)
    removed = [r["transaction_id"] for r in page.get("removed", [])]
    if removed:
        # A posted transaction replaces its pending one: Plaid removes the pending id, and the
        # posted row keeps the link in pending_transaction_id.
        report.removed += conn.execute(
            "delete from ledger.plaid_transactions where item_id = %s and transaction_id = any(%s)",
            (item.item_id, removed),
        ).rowcount
    report.quarantined += quarantine(conn, rejected)


def _jsonable(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw object with Decimals as strings, exactly as received, for the quarantine."""
    loaded: dict[str, Any] = json.loads(json.dumps(raw, default=str))
    return loaded


def verification_key_fetcher(
    client: plaid_api.PlaidApi,
) -> Callable[[str], dict[str, Any] | None]:
    """``/webhook_verification_key/get`` as the webhook receiver's key source."""

    def fetch(key_id: str) -> dict[str, Any] | None:
        try:
            response = client.webhook_verification_key_get(
                WebhookVerificationKeyGetRequest(key_id=key_id)
            )
        except plaid.ApiException:
            return None
        key: dict[str, Any] = response.key.to_dict()
        return key

    return fetch
