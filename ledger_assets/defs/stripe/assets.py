"""Stripe → the system of record: incremental pulls and the webhook inbox, as one asset."""

from collections.abc import Iterator

import dagster as dg

from ledger_assets.defs.resources import PostgresResource, StripeResource
from ledger_assets.defs.sor.assets import sor_asset_key
from ledger_assets.lib.ingest.inbox import apply_stripe_events
from ledger_assets.lib.ingest.stripe_pull import (
    OBJECT_STREAMS,
    PAYOUT_LINK_WINDOW_DAYS,
    StripeAccount,
    link_payout_transactions,
    pull_account,
    read_cursors,
)
from ledger_assets.lib.ingest.stripe_writer import WriteReport
from ledger_assets.lib.ingest.tables import STRIPE_TABLES
from ledger_assets.lib.ingest.upsert import MergeCounts
from ledger_assets.lib.sor.catalog import stripe_accounts

STRIPE_SOR_KEYS = [sor_asset_key(t.name) for t in STRIPE_TABLES.values()]


class StripeIngestConfig(dg.Config):
    #: False for webhook-triggered runs: apply the inbox only, without list pulls.
    pull: bool = True
    #: Re-read this many seconds behind each stored cursor.
    overlap_seconds: int = 15 * 60


@dg.multi_asset(
    name="stripe_ingestion",
    specs=[
        dg.AssetSpec(
            key,
            description=f"Postgres table ledger.{key.path[-1]}, filled from Stripe.",
            group_name="system_of_record",
            kinds={"postgres", "stripe"},
        )
        for key in STRIPE_SOR_KEYS
    ],
    pool="stripe_api",
)
def stripe_ingestion(
    context: dg.AssetExecutionContext,
    config: StripeIngestConfig,
    postgres: PostgresResource,
    stripe: StripeResource,
) -> Iterator[dg.MaterializeResult]:  # type: ignore[type-arg]
    """Pull every tenant's Stripe objects since their cursors, then apply webhook events.

    Object lists first (charges before the refunds, disputes and balance transactions that
    name them), then /v1/events into the inbox, then the inbox in source-timestamp order.
    """
    client = stripe.client()
    overlap = config.overlap_seconds
    writes = WriteReport()
    fetched = events_landed = payout_links = 0
    cursors: dict[str, int | None] = {}
    with postgres.connect() as conn:
        if config.pull:
            for tenant_id, account_id in stripe_accounts(conn):
                account = StripeAccount(tenant_id, account_id)
                first_pull = "payouts" not in read_cursors(conn, account_id)
                for report in pull_account(conn, client, account, OBJECT_STREAMS, overlap):
                    fetched += report.fetched
                    events_landed += report.events_landed
                    writes.absorb(report.writes)
                    cursors[f"{account_id}/{report.stream}"] = report.cursor_after
                    context.log.info(
                        "stripe pull tenant=%s stream=%s fetched=%d written=%d cursor=%s",
                        tenant_id, report.stream, report.fetched, report.writes.written,
                        report.cursor_after,
                    )  # fmt: skip
                # A first pull links every payout; later runs refresh the recent window only.
                payout_links += link_payout_transactions(
                    conn,
                    client,
                    account,
                    window_days=None if first_pull else PAYOUT_LINK_WINDOW_DAYS,
                )
        applied = apply_stripe_events(conn)
    writes.absorb(applied.writes)
    shared: dict[str, dg.RawMetadataValue] = {
        "objects_fetched": fetched,
        "events_landed": events_landed,
        "payout_links": payout_links,
        "events_applied": applied.applied,
        "events_quarantined": applied.quarantined,
        "events_ignored": applied.ignored,
        "records_quarantined": writes.quarantined,
        "records_released_from_quarantine": writes.released,
        "cursors": dg.MetadataValue.json(cursors),
    }
    for table in STRIPE_TABLES.values():
        counts = writes.merged.get(table.name, MergeCounts())
        yield dg.MaterializeResult(
            asset_key=sor_asset_key(table.name),
            metadata={
                **shared,
                "rows_inserted": counts.inserted,
                "rows_updated": counts.updated,
                "rows_unchanged": counts.unchanged,
            },
        )
