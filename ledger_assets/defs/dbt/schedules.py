"""Keep the marts fresh: a full build once, then the current days every five minutes."""

from datetime import UTC, date, timedelta

import dagster as dg

from ledger_assets.defs.dbt.assets import ledger_marts

#: The days (relative to the UTC date) every tick rebuilds. Tenants run from UTC-11 to UTC+14:
#: "today" is yesterday, today or tomorrow somewhere. Changes to earlier days are rebuilt by
#: the late-arrivals sensor (defs/disputes), from the first day before these.
SCHEDULED_DAYS = (-1, 0)


def first_scheduled_day(today: date) -> date:
    """The earliest day the schedule rebuilds when the UTC date is ``today``."""
    return today + timedelta(days=min(SCHEDULED_DAYS))


marts_job = dg.define_asset_job(
    "marts_job",
    selection=dg.AssetSelection.assets(ledger_marts),
    description="Build the dbt marts for one day partition (or everything, with full_refresh).",
)


@dg.schedule(
    name="marts_schedule",
    description="Rebuild the current days' marts every five minutes (a full build the first "
    "time), so the dashboard follows the lake.",
    job=marts_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def marts_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    moment = context.scheduled_execution_time.astimezone(UTC)
    built_before = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=marts_job.name, statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=1,
    )
    if not built_before:
        return [
            dg.RunRequest(
                partition_key=moment.date().isoformat(),
                run_config=dg.RunConfig({ledger_marts.op.name: {"config": {"full_refresh": True}}}),
                tags={"ledger/marts": "full_refresh"},
            )
        ]
    days = [moment.date() + timedelta(days=d) for d in SCHEDULED_DAYS]
    return [dg.RunRequest(partition_key=day.isoformat()) for day in days]
