"""Sync Plaid items when their webhooks land, and sweep every item on a schedule."""

import dagster as dg

from ledger_assets.defs.plaid.assets import plaid_ingestion
from ledger_assets.defs.resources import PostgresResource
from ledger_assets.lib.ingest.inbox import pending_plaid_items

plaid_sync_job = dg.define_asset_job(
    "plaid_sync_job",
    selection=dg.AssetSelection.assets(plaid_ingestion),
    description="/transactions/sync for Plaid items.",
)

# Plaid drops webhooks after 24 h of failed deliveries; a periodic sweep self-heals.
plaid_sync_schedule = dg.ScheduleDefinition(
    name="plaid_sync_schedule",
    description="Sync every Plaid item, whether or not a webhook announced changes.",
    job=plaid_sync_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


@dg.sensor(
    name="plaid_webhook_sensor",
    description="Sync the items named by newly landed Plaid webhooks.",
    job=plaid_sync_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def plaid_webhook_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    with postgres.connect() as conn:
        waiting = pending_plaid_items(conn)
    seen = int(context.cursor or 0)
    fresh = {item: newest for item, newest in waiting.items() if newest > seen}
    if not fresh:
        return dg.SkipReason("no new Plaid webhooks")
    requests = [
        dg.RunRequest(
            run_key=f"plaid-{item}-{newest}",
            run_config=dg.RunConfig({"plaid_ingestion": {"config": {"item_ids": [item]}}}),
            tags={"ledger/trigger": "plaid_webhook", "ledger/plaid_item": item},
        )
        for item, newest in sorted(fresh.items())
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(max(fresh.values())))
