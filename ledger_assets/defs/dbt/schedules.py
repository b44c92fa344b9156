"""Keep the marts fresh: a full build once, then the current days every five minutes."""

from datetime import UTC, date, timedelta

import dagster as dg

from ledger_assets.defs.dbt.assets import ledger_marts
from ledger_assets.defs.resources import LakeResource
from ledger_assets.defs.runs import (
    PARTITION_RANGE_END,
    PARTITION_RANGE_START,
    UNFINISHED,
    waiting_run,
)
from ledger_assets.lib.lake.sync import read_lake_state

#: The days (relative to the UTC date) every tick rebuilds, in one run over that range. Tenants
#: run from UTC-11 to UTC+14 ("today" is yesterday, today or tomorrow somewhere), and most
#: changes to recent days arrive within a week: payouts sweep the last days' balance
#: transactions, bank transactions post a few days after they are pending, refunds follow
#: their charges. A one-week window costs a marts run about what one day does (its cost is
#: per dbt node, not per row). Changes to earlier days are rebuilt by the late-arrivals sensor
#: (defs/disputes).
SCHEDULED_DAYS = tuple(range(-6, 1))
CURRENT_TAG = "ledger/marts"


def first_scheduled_day(today: date) -> date:
    """The earliest day the schedule rebuilds when the UTC date is ``today``."""
    return today + timedelta(days=min(SCHEDULED_DAYS))


marts_job = dg.define_asset_job(
    "marts_job",
    selection=dg.AssetSelection.assets(ledger_marts),
    description="Build the dbt marts for one day partition (or everything, with full_refresh).",
    # One step (the dbt build, which runs dbt in a process of its own): the default
    # multiprocess executor would start a step process that loads the whole code location again
    # (~3.5 s) before dbt even starts.
    executor_def=dg.in_process_executor,
)


@dg.schedule(
    name="marts_schedule",
    description="Rebuild the last week's marts every five minutes in one run (a full build the "
    "first time), so the dashboard follows the lake.",
    job=marts_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def marts_schedule(
    context: dg.ScheduleEvaluationContext, lake: LakeResource
) -> list[dg.RunRequest] | dg.SkipReason:
    if read_lake_state(lake.layout).seeding:
        # The marts refuse to build from a lake that is still seeding; asking would only
        # queue a run that fails.
        return dg.SkipReason("the lake is still seeding")
    moment = context.scheduled_execution_time.astimezone(UTC)
    built_before = context.instance.get_runs(
        filters=dg.RunsFilter(
            job_name=marts_job.name,
            statuses=[dg.DagsterRunStatus.SUCCESS],
            tags={CURRENT_TAG: "full_refresh"},
        ),
        limit=1,
    )
    if not built_before:
        full_build = {CURRENT_TAG: "full_refresh"}
        if waiting_run(context.instance, marts_job.name, full_build, UNFINISHED) is not None:
            return []  # the first full build is on its way
        return [
            dg.RunRequest(
                partition_key=moment.date().isoformat(),
                run_config=dg.RunConfig({ledger_marts.op.name: {"config": {"full_refresh": True}}}),
                tags={CURRENT_TAG: "full_refresh"},
            )
        ]
    if waiting_run(context.instance, marts_job.name, {CURRENT_TAG: "current"}) is not None:
        # The queued run reads the lake when it starts: another one would add nothing.
        return []
    first, last = (moment.date() + timedelta(days=d) for d in (min(SCHEDULED_DAYS), 0))
    return [
        dg.RunRequest(
            tags={
                CURRENT_TAG: "current",
                PARTITION_RANGE_START: first.isoformat(),
                PARTITION_RANGE_END: last.isoformat(),
            }
        )
    ]
