"""Keep the current day's marts fresh; older days are rebuilt by backfills and late-data runs."""

from datetime import UTC, datetime

import dagster as dg

from ledger_assets.defs.dbt.assets import ledger_marts

marts_job = dg.define_asset_job(
    "marts_job",
    selection=dg.AssetSelection.assets(ledger_marts),
    description="Build the dbt marts for one day partition.",
)


@dg.schedule(
    name="marts_schedule",
    description="Rebuild today's marts every five minutes, so the dashboard follows the lake.",
    job=marts_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def marts_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    moment = context.scheduled_execution_time or datetime.now(UTC)
    return dg.RunRequest(partition_key=moment.astimezone(UTC).date().isoformat())
