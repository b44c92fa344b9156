"""How each ingested table is written: its columns, key, and the rule that orders snapshots.

Writes go through :mod:`ledger_assets.lib.ingest.upsert`, which stages rows with COPY and
merges them with one ``INSERT ... ON CONFLICT`` per batch. The merge only moves a row forward:
``(source_ts, progress)`` of the incoming snapshot must be greater than the stored one, so an
older or duplicated delivery is a no-op (see migration 0003).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IngestTable:
    """One system-of-record table as ingestion writes it.

    Attributes:
        name: the table in schema ``ledger``.
        columns: the columns a staged row carries, in order (the key first).
        key: the primary key column.
        progress: an SQL expression over the table alias ``{t}`` ranking lifecycle progress,
            used to order two snapshots with the same ``source_ts``; None for tables that are
            never updated (their upsert is insert-or-ignore).
    """

    name: str
    columns: tuple[str, ...]
    key: str
    progress: str | None

    @property
    def has_source_ts(self) -> bool:
        return "source_ts" in self.columns


STRIPE_CHARGES = IngestTable(
    "stripe_charges",
    (
        "id", "tenant_id", "amount", "amount_captured", "amount_refunded", "currency", "status",
        "paid", "captured", "refunded", "disputed", "balance_transaction", "payment_intent",
        "customer", "description", "metadata", "livemode", "created", "source_ts",
    ),
    "id",
    # A charge only ever gains refunds and disputes; the status breaks the remaining ties.
    "({t}.amount_refunded, {t}.disputed::int, {t}.refunded::int, "
    "ledger.status_progress({t}.status))",
)  # fmt: skip

STRIPE_REFUNDS = IngestTable(
    "stripe_refunds",
    (
        "id", "tenant_id", "charge", "amount", "currency", "status", "reason",
        "balance_transaction", "failure_balance_transaction", "metadata", "created", "source_ts",
    ),
    "id",
    "ledger.status_progress({t}.status)",
)  # fmt: skip

STRIPE_DISPUTES = IngestTable(
    "stripe_disputes",
    (
        "id", "tenant_id", "charge", "amount", "currency", "reason", "status",
        "is_charge_refundable", "evidence_due_by", "balance_transactions", "metadata", "created",
        "source_ts",
    ),
    "id",
    # Withdrawal and reinstatement add balance transactions; then the status decides.
    "(cardinality({t}.balance_transactions), ledger.status_progress({t}.status))",
)  # fmt: skip

STRIPE_PAYOUTS = IngestTable(
    "stripe_payouts",
    (
        "id", "tenant_id", "amount", "currency", "status", "arrival_date", "automatic",
        "balance_transaction", "failure_balance_transaction", "reconciliation_status", "type",
        "metadata", "created", "source_ts",
    ),
    "id",
    "ledger.status_progress({t}.status)",
)  # fmt: skip

STRIPE_BALANCE_TRANSACTIONS = IngestTable(
    "stripe_balance_transactions",
    (
        "id", "tenant_id", "amount", "fee", "net", "currency", "exchange_rate", "fee_details",
        "type", "reporting_category", "source", "status", "available_on", "created", "source_ts",
    ),
    "id",
    "ledger.status_progress({t}.status)",
)  # fmt: skip

PLAID_ACCOUNTS = IngestTable(
    "plaid_accounts",
    (
        "account_id", "tenant_id", "item_id", "name", "official_name", "mask", "type", "subtype",
        "currency",
    ),
    "account_id",
    None,
)  # fmt: skip

PLAID_TRANSACTIONS = IngestTable(
    "plaid_transactions",
    (
        "transaction_id", "tenant_id", "item_id", "account_id", "amount", "amount_minor",
        "currency", "date", "authorized_date", "datetime", "authorized_datetime", "name",
        "merchant_name", "payment_channel", "category_primary", "category_detailed", "pending",
        "pending_transaction_id", "transaction_code",
    ),
    "transaction_id",
    # Plaid's sync is ordered and cursor-based: the latest `modified` always wins.
    "0",
)  # fmt: skip

STRIPE_TABLES = {
    "charge": STRIPE_CHARGES,
    "refund": STRIPE_REFUNDS,
    "dispute": STRIPE_DISPUTES,
    "payout": STRIPE_PAYOUTS,
    "balance_transaction": STRIPE_BALANCE_TRANSACTIONS,
}
