"""Sync Plaid items when their webhooks land, and sweep every item on a schedule."""

import dagster as dg

from ledger_assets.defs.plaid.assets import plaid_ingestion
from ledger_assets.defs.resources import PostgresResource
from ledger_assets.defs.runs import waiting_run
from ledger_assets.lib.ingest.inbox import newest_received, pending_plaid_items

plaid_sync_job = dg.define_asset_job(
    "plaid_sync_job",
    selection=dg.AssetSelection.assets(plaid_ingestion),
    # Small runs: one process saves ~3 s of start-up per run on 2 cores (performance-facts §4).
    executor_def=dg.in_process_executor,
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
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def plaid_webhook_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.RunRequest | dg.SkipReason:
    queued = waiting_run(context.instance, plaid_sync_job.name)
    if queued is not None:
        # Items with news after it was requested get a run once it has started.
        return dg.SkipReason(f"run {queued.run_id} is waiting to start")
    with postgres.connect() as conn:
        waiting = pending_plaid_items(conn)
        newest = newest_received(conn, "plaid")
    if not waiting or newest is None:
        return dg.SkipReason("no Plaid webhooks waiting in the inbox")
    # One run per tick for every item with news, however many webhooks arrived: runs are the
    # expensive part. Webhooks stay 'received' until a sync serves them, so the inbox is the
    # state; the run key names the newest waiting row, so repeated ticks dedupe.
    return dg.RunRequest(
        run_key=f"plaid-inbox-{newest}",
        run_config=dg.RunConfig({"plaid_ingestion": {"config": {"item_ids": sorted(waiting)}}}),
        tags={"ledger/trigger": "plaid_webhook", "ledger/plaid_items": str(len(waiting))},
    )
