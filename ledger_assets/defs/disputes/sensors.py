"""Late-arriving changes: rebuild exactly the mart days that a change to an old day touched.

The marts schedule rebuilds only the current days. A dispute opened today on a charge from
months ago rewrites that charge's old cohort partition (and, when a later state of an old
dispute arrives, the dispute's own day); ``lake_apply_job`` records a materialization for each
rewritten partition with the disputes and the commit LSNs it came from. This sensor reads those
materializations through a cursor over the event log (the storage id), keeps the ones on days
the marts schedule does not rebuild, and requests one ``marts_job`` run per touched day —
nothing else — unless a marts run covering that day is still queued. While runs it requested
are still waiting to start, it requests none (the queue stays bounded) and reads on later,
except for a dispute: its run is requested at once and starts before the other queued runs
(``dagster/priority``), and the cursor remembers its changes so that they are not requested
again. Each tick watches for new materializations for most of a daemon pass
(``SensorWaitResource``), so an apply run's changes are seen as they are recorded.

Run keys name the dispute(s) and the LSN that rewrote the day, so a second dispute on the same
day (or a later state of the same dispute) is a new run and never deduplicated away. The run
tags ``ledger/dispute`` and ``ledger/partitions`` show in the Dagster UI which dispute caused
which run and through which lake partitions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg

from ledger_assets.defs.dbt.schedules import CURRENT_TAG, first_scheduled_day, marts_job
from ledger_assets.defs.lake.assets import lake_asset_key, lake_partitions
from ledger_assets.defs.lake.jobs import DISPUTES_KEY, LSN_FROM_KEY, LSN_TO_KEY
from ledger_assets.defs.resources import SensorWaitResource
from ledger_assets.defs.runs import (
    NOT_YET_WORKING,
    PARTITION_RANGE_END,
    PARTITION_RANGE_START,
    PRIORITY_TAG,
    TICK_EVERY_DAEMON_PASS,
    waiting_run,
)
from ledger_assets.lib.polling import poll
from ledger_assets.lib.sor.catalog import MIRRORED_TABLES

#: Materializations read per lake table and tick; a longer backlog drains over later ticks.
PAGE = 1_000
DISPUTE_TAG = "ledger/dispute"
TRIGGER_TAG = "ledger/trigger"
LATE_ARRIVAL = "late_arrival"
PARTITIONS_TAG = "ledger/partitions"
#: Late days at most this far apart are rebuilt in one run over their range.
CLUSTER_GAP_DAYS = 7
#: A run for a dispute goes before queued runs for other late changes (refund updates on last
#: month's charges) and before lake runs (PRIORITY_TAG).
DISPUTE_PRIORITY = "10"


@dataclass(frozen=True)
class LakeChange:
    """One rewritten lake partition, as its materialization tells it."""

    storage_id: int
    table: str
    tenant_id: int
    day: date
    disputes: tuple[str, ...]
    lsn_from: str | None
    lsn_to: str | None

    @property
    def trigger(self) -> str:
        """What caused the rewrite: its disputes and LSN, else its LSN, else the record."""
        if self.disputes:
            return f"{'+'.join(self.disputes)}@{self.lsn_to}"
        return f"lsn-{self.lsn_to}" if self.lsn_to else f"record-{self.storage_id}"


def lake_change(record: dg.EventLogRecord) -> LakeChange | None:
    """The change a lake materialization record describes (None: it changed nothing)."""
    materialization = record.asset_materialization
    if materialization is None or materialization.partition is None:
        return None
    metadata = materialization.metadata
    changed = metadata.get("changed")
    if changed is not None and changed.value is False:
        return None  # a rebuild that found the partition already equal to Postgres

    def text(key: str) -> str | None:
        value = metadata.get(key)
        return None if value is None or value.value in (None, "") else str(value.value)

    keys = lake_partitions.get_partition_key_from_str(materialization.partition)
    dims = keys.keys_by_dimension
    disputes = text(DISPUTES_KEY)
    return LakeChange(
        storage_id=record.storage_id,
        table=materialization.asset_key.path[-1],
        tenant_id=int(dims["tenant"]),
        day=date.fromisoformat(dims["date"]),
        disputes=tuple(disputes.split(",")) if disputes else (),
        lsn_from=text(LSN_FROM_KEY),
        lsn_to=text(LSN_TO_KEY),
    )


def late_run_requests(
    changes: list[LakeChange], before: date, covered: Callable[[date], bool]
) -> list[dg.RunRequest]:
    """Marts runs for the days earlier than ``before`` that the tick's changes touched.

    Days are grouped into runs: days at most :data:`CLUSTER_GAP_DAYS` apart share one run over
    their range (a marts run costs about the same for one day or a week: its cost is per dbt
    node), while an isolated old day — a dispute's months-old cohort — gets a run of its own.
    A day already ``covered`` by a marts run that has not started yet is left to that run: it
    reads the lake when it starts, so it includes these changes. The run key names every
    trigger (disputes and LSN ranges) in the run, so a later dispute on the same day is a new
    key, never deduplicated away.
    """
    by_day: dict[date, list[LakeChange]] = {}
    for change in changes:
        if change.day < before and not covered(change.day):
            by_day.setdefault(change.day, []).append(change)
    clusters: list[list[date]] = []
    for day in sorted(by_day):
        if clusters and (day - clusters[-1][-1]).days <= CLUSTER_GAP_DAYS:
            clusters[-1].append(day)
        else:
            clusters.append([day])
    requests = []
    for days in clusters:
        group = [c for day in days for c in by_day[day]]
        first, last = days[0].isoformat(), days[-1].isoformat()
        disputes = sorted({d for c in group for d in c.disputes})
        partitions = sorted({f"{c.day.isoformat()}:{c.table}:{c.tenant_id}" for c in group})
        triggers = sorted({c.trigger for c in group})
        digest = hashlib.sha256("|".join(triggers).encode()).hexdigest()[:16]
        tags = {
            DISPUTE_TAG: ",".join(disputes) or "none",
            PARTITIONS_TAG: ",".join(partitions),
            "ledger/lsn": f"{min(c.lsn_from or '' for c in group)}.."
            f"{max(c.lsn_to or '' for c in group)}",
            TRIGGER_TAG: LATE_ARRIVAL,
        }
        if first != last:
            tags |= {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}
        if disputes:
            tags[PRIORITY_TAG] = DISPUTE_PRIORITY
        requests.append(
            dg.RunRequest(
                run_key=f"late:{first}..{last}:{'+'.join(disputes) or 'cdc'}:{digest}",
                partition_key=first if first == last else None,
                tags=tags,
            )
        )
    return requests


@dataclass(frozen=True)
class LateCursor:
    """Where the sensor has read to: every lake materialization up to storage id ``after``,
    and the later ones in ``requested`` (changes with a dispute whose runs were requested
    while other late runs waited, ahead of the changes around them)."""

    after: int | None = None
    requested: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> LateCursor:
        if not text:
            return cls()
        if text.isdigit():  # written before ``requested`` existed
            return cls(int(text))
        value = json.loads(text)
        return cls(value["after"], frozenset(value["requested"]))

    def __str__(self) -> str:
        return json.dumps({"after": self.after, "requested": sorted(self.requested)})

    def past(self, after: int) -> LateCursor:
        """Read up to ``after``: the requested ids it passes are no longer needed."""
        return LateCursor(after, frozenset(i for i in self.requested if i > after))


def request_covers(request: dg.RunRequest, day: date) -> bool:
    """Whether a request from :func:`late_run_requests` rebuilds ``day``."""
    if request.partition_key is not None:
        return request.partition_key == day.isoformat()
    first, last = request.tags[PARTITION_RANGE_START], request.tags[PARTITION_RANGE_END]
    return first <= day.isoformat() <= last


def first_full_build_started(instance: dg.DagsterInstance) -> float | None:
    """When the first successful full marts build started (None: none has succeeded yet)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=marts_job.name,
            statuses=[dg.DagsterRunStatus.SUCCESS],
            tags={CURRENT_TAG: "full_refresh"},
        ),
        limit=1,
        ascending=True,
    )
    if not records:
        return None
    return records[0].start_time or records[0].create_timestamp.timestamp()


def pending_marts_coverage(instance: dg.DagsterInstance) -> Callable[[date], bool]:
    """Whether a day is covered by a marts run that is queued and has not started."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=marts_job.name, statuses=NOT_YET_WORKING)
    )
    everything = False
    days: set[date] = set()
    ranges: list[tuple[date, date]] = []
    for run in runs:
        tags = run.tags
        if tags.get(CURRENT_TAG) == "full_refresh":
            everything = True
        elif "dagster/partition" in tags:
            days.add(date.fromisoformat(tags["dagster/partition"]))
        elif PARTITION_RANGE_START in tags and PARTITION_RANGE_END in tags:
            start, end = tags[PARTITION_RANGE_START], tags[PARTITION_RANGE_END]
            ranges.append((date.fromisoformat(start), date.fromisoformat(end)))
    return lambda day: everything or day in days or any(lo <= day <= hi for lo, hi in ranges)


def late_arrivals(instance: dg.DagsterInstance, cursor: LateCursor) -> dg.SensorResult | None:
    """One look at the lake materializations past ``cursor``: the runs they call for and the
    cursor past them, a skip that leaves the cursor where it is, or None when there are none."""
    records: list[dg.EventLogRecord] = []
    # Storage ids are global to the event log: one cursor covers every lake table. When a
    # table has more than a page, the cursor stops at that page's end, so nothing is skipped;
    # records seen twice yield run keys already used, which Dagster does not launch again.
    limit: int | None = None
    for spec in MIRRORED_TABLES:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=lake_asset_key(spec.name), after_storage_id=cursor.after
            ),
            limit=PAGE,
            ascending=True,
        )
        records += page.records
        if page.has_more and page.records:
            last = page.records[-1].storage_id
            limit = last if limit is None else min(limit, last)
    if limit is not None:
        records = [r for r in records if r.storage_id <= limit]
    read_to = max((r.storage_id for r in records), default=None)
    records = [r for r in records if r.storage_id not in cursor.requested]
    if read_to is None or not records:
        return None
    built = first_full_build_started(instance)
    if built is None:
        # The first full build will read every partition; until it has, there are no marts to
        # correct. The cursor stays, so changes it may have missed are looked at afterwards.
        return dg.SensorResult(skip_reason="waiting for the first full marts build")
    # Changes before the full build started are in it.
    changes = [c for r in records if r.timestamp >= built and (c := lake_change(r)) is not None]
    requests = late_run_requests(
        changes,
        first_scheduled_day(datetime.now(UTC).date()),
        pending_marts_coverage(instance),
    )
    if waiting_run(instance, marts_job.name, {TRIGGER_TAG: LATE_ARRIVAL}) is not None:
        # The last tick's runs are still queued: more runs now would only lengthen the queue
        # (late changes on scattered old days can come faster than two cores rebuild them).
        # The cursor stays, so the first tick after they start takes every change since,
        # clustered into few runs. A dispute does not wait for that: its run is requested now
        # (and goes first in the queue, DISPUTE_PRIORITY), and its changes are remembered in
        # the cursor so that they are not requested again.
        urgent = [r for r in requests if r.tags[DISPUTE_TAG] != "none"]
        if not urgent:
            return dg.SensorResult(
                skip_reason="a late-arrivals marts run is still waiting to start"
            )
        taken = {c.storage_id for c in changes if any(request_covers(r, c.day) for r in urgent)}
        after = LateCursor(cursor.after, cursor.requested | taken)
        return dg.SensorResult(run_requests=urgent, cursor=str(after))
    return dg.SensorResult(run_requests=requests, cursor=str(cursor.past(read_to)))


def newest_lake_materialization(instance: dg.DagsterInstance) -> int | None:
    """The storage id of the newest materialization of any lake table (one small query)."""
    records = instance.get_asset_records([lake_asset_key(spec.name) for spec in MIRRORED_TABLES])
    ids = [r.asset_entry.last_materialization_storage_id for r in records]
    return max((i for i in ids if i is not None), default=None)


@dg.sensor(
    name="late_arrivals_sensor",
    description="Rebuild the mart days of lake partitions rewritten before the days the marts "
    "schedule rebuilds (a late dispute on an old charge): one marts run per cluster of days.",
    job_name=marts_job.name,
    # A late dispute's marts wait for this tick: at 30 s that was most of the way from the
    # commit to the marts. Every daemon pass (TICK_EVERY_DAEMON_PASS), and each tick watches
    # the event log for most of the pass (SensorWaitResource): per poll one query for the lake
    # tables' newest materialization, and a look at the new ones only when there are some.
    minimum_interval_seconds=TICK_EVERY_DAEMON_PASS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def late_arrivals_sensor(
    context: dg.SensorEvaluationContext, sensor_wait: SensorWaitResource
) -> dg.SensorResult:
    instance = context.instance
    cursor = LateCursor.parse(context.cursor)
    newest_seen: int | None = None
    quiet = "no new late lake changes"

    def runs_to_request() -> dg.SensorResult | None:
        """The tick's result once a look finds runs to request; until then each look that a
        new lake materialization calls for moves the cursor past what needs no run (today's
        partitions), or keeps it where it is with the reason why."""
        nonlocal cursor, newest_seen, quiet
        newest = newest_lake_materialization(instance)
        if newest == newest_seen:
            return None
        newest_seen = newest
        result = late_arrivals(instance, cursor)
        if result is None:
            return None
        if result.run_requests:
            return result
        if result.skip_reason is not None:
            quiet = result.skip_reason.skip_message or quiet
        else:
            cursor = LateCursor.parse(result.cursor)
        return None

    result = poll(runs_to_request, seconds=sensor_wait.seconds, every=sensor_wait.poll_seconds)
    if result is None:
        return dg.SensorResult(skip_reason=quiet, cursor=str(cursor))
    context.log.info(
        f"lake materializations read to {result.cursor}: "
        f"{len(result.run_requests or [])} late mart day run(s)"
    )
    return result
