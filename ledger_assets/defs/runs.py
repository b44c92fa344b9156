"""Run bookkeeping shared by the sensors and schedules that could otherwise queue duplicates."""

from collections.abc import Mapping, Sequence

import dagster as dg

#: Runs that have not started their work: one of these will still see everything that lands
#: before it starts, so asking for another adds only start-up cost (several seconds each on
#: two cores, and the queue fills faster than it drains).
NOT_YET_WORKING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]
#: Runs not finished yet: waiting, or working.
UNFINISHED = [*NOT_YET_WORKING, dg.DagsterRunStatus.STARTED]

#: ``minimum_interval_seconds`` for a sensor that should tick on every pass of Dagster's sensor
#: daemon. The daemon passes every 5 s at the most often (``MIN_INTERVAL_LOOP_TIME``), and an
#: interval of exactly 5 s made a tick skip every other pass: a pass starts a hair under 5 s
#: after the last tick, so the sensor was not due yet and waited for the next pass (ticks came
#: every 10 s, measured in the demo's daemon log).
TICK_EVERY_DAEMON_PASS = 1

#: Dagster's queued run coordinator starts runs with a higher value first (default 0). In use:
#: lake runs 5 (defs/lake/jobs.py), late-arrival marts runs for a dispute 10 (defs/disputes).
PRIORITY_TAG = "dagster/priority"

#: The tags that make a run cover a range of partitions (one run, single-run backfill policy).
PARTITION_TAG = "dagster/partition"
PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"


def waiting_run(
    instance: dg.DagsterInstance,
    job_name: str,
    tags: Mapping[str, str] | None = None,
    statuses: Sequence[dg.DagsterRunStatus] = NOT_YET_WORKING,
) -> dg.DagsterRun | None:
    """A run of ``job_name`` (with ``tags``) that has not started its work yet (or, with
    ``statuses=UNFINISHED``, has not finished it), if any."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=job_name, statuses=list(statuses), tags=tags or {}),
        limit=1,
    )
    return runs[0] if runs else None
