"""Plaid → the system of record: /transactions/sync per item, cursor written with the data."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from ledger_assets.defs.resources import PlaidResource, PostgresResource
from ledger_assets.defs.sor.assets import sor_asset_key
from ledger_assets.lib.ingest.inbox import mark_plaid_webhooks_synced, pending_plaid_items
from ledger_assets.lib.ingest.plaid_sync import PlaidItem, SyncRestartsExhaustedError, sync_item
from ledger_assets.lib.ingest.upsert import MergeCounts
from ledger_assets.lib.sor.catalog import plaid_items


class PlaidSyncConfig(dg.Config):
    #: Sync only these items (webhook-triggered runs); every item when empty.
    item_ids: list[str] = Field(default_factory=list)


@dg.multi_asset(
    name="plaid_ingestion",
    specs=[
        dg.AssetSpec(
            sor_asset_key(name),
            description=f"Postgres table ledger.{name}, filled from Plaid /transactions/sync.",
            group_name="system_of_record",
            kinds={"postgres", "plaid"},
        )
        for name in ("plaid_accounts", "plaid_transactions")
    ],
    pool="plaid_api",
)
def plaid_ingestion(
    context: dg.AssetExecutionContext,
    config: PlaidSyncConfig,
    postgres: PostgresResource,
    plaid: PlaidResource,
) -> Iterator[dg.MaterializeResult]:  # type: ignore[type-arg]
    """Sync each item's transactions; an item that keeps mutating is retried next time."""
    client = plaid.client()
    accounts = transactions = MergeCounts()
    cursors: dict[str, str | None] = {}
    totals = {"added": 0, "modified": 0, "removed": 0, "quarantined": 0, "restarts": 0}
    failed: list[str] = []
    with postgres.connect() as conn:
        waiting = pending_plaid_items(conn)
        for item_id, tenant_id, token in plaid_items(conn):
            if config.item_ids and item_id not in config.item_ids:
                continue
            try:
                report = sync_item(conn, client, PlaidItem(item_id, tenant_id, token))
            except SyncRestartsExhaustedError as exc:
                context.log.warning(str(exc))
                failed.append(item_id)
                continue
            if item_id in waiting:
                mark_plaid_webhooks_synced(conn, item_id, waiting[item_id])
            accounts += report.accounts
            transactions += report.transactions
            cursors[item_id] = report.cursor_after
            for key in totals:
                totals[key] += getattr(report, key)
            context.log.info(
                "plaid sync item=%s tenant=%s pages=%d added=%d removed=%d",
                item_id, tenant_id, report.pages, report.added, report.removed,
            )  # fmt: skip
    shared: dict[str, dg.RawMetadataValue] = {
        **totals,
        "items_deferred": failed,
        "cursors": dg.MetadataValue.json(cursors),
    }
    for name, counts in (("plaid_accounts", accounts), ("plaid_transactions", transactions)):
        yield dg.MaterializeResult(
            asset_key=sor_asset_key(name),
            metadata={
                **shared,
                "rows_inserted": counts.inserted,
                "rows_updated": counts.updated,
                "rows_unchanged": counts.unchanged,
            },
        )
