"""The late-arrivals sensor's requests: one run per touched old day, never a duplicate queue."""

import threading
import time
from datetime import UTC, date, datetime

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from ledger_assets.defs.disputes.sensors import (
    LATE_ARRIVAL,
    TRIGGER_TAG,
    LakeChange,
    late_arrivals_sensor,
    late_run_requests,
    pending_marts_coverage,
)
from ledger_assets.defs.lake.assets import lake_asset_key
from ledger_assets.defs.lake.jobs import DISPUTES_KEY
from ledger_assets.defs.resources import SensorWaitResource

OLD, OLDER, RECENT = date(2026, 7, 1), date(2026, 6, 2), date(2026, 11, 28)
#: One look per tick, as a plain sensor (the tests below that wait say so).
NO_WAIT = {"sensor_wait": SensorWaitResource(seconds=0)}


def change(day: date, dispute: str | None, lsn: str, storage_id: int) -> LakeChange:
    return LakeChange(
        storage_id=storage_id, table="stripe_charges", tenant_id=3, day=day,
        disputes=(dispute,) if dispute else (), lsn_from="0/10", lsn_to=lsn,
    )  # fmt: skip


def test_one_run_per_old_day_naming_every_dispute_and_a_new_key_for_later_ones() -> None:
    changes = [
        change(OLD, "dp_1", "0/20", 1),
        change(OLD, "dp_2", "0/30", 2),
        change(OLDER, None, "0/30", 3),
        change(RECENT, "dp_3", "0/30", 4),  # the schedule rebuilds it
    ]
    requests = late_run_requests(changes, date(2026, 11, 23), lambda day: False)
    assert [r.partition_key for r in requests] == [OLDER.isoformat(), OLD.isoformat()]
    assert requests[1].tags["ledger/dispute"] == "dp_1,dp_2"
    assert "dp_1+dp_2" in (requests[1].run_key or "")
    # The same day touched again by a later dispute is a different run key.
    later = late_run_requests([change(OLD, "dp_9", "0/40", 5)], date(2026, 11, 23), lambda d: False)
    assert later[0].run_key != requests[1].run_key


def test_days_a_queued_marts_run_covers_are_left_to_it() -> None:
    with dg.instance_for_test() as instance:
        instance.add_run(
            DagsterRun(
                job_name="marts_job", run_id="c" * 36, status=dg.DagsterRunStatus.NOT_STARTED,
                tags={"dagster/partition": OLD.isoformat()},
            )
        )  # fmt: skip
        covered = pending_marts_coverage(instance)
        requests = late_run_requests(
            [change(OLD, "dp_1", "0/20", 1), change(OLDER, "dp_2", "0/20", 2)],
            date(2026, 11, 23),
            covered,
        )
        assert [r.partition_key for r in requests] == [OLDER.isoformat()]
        instance.add_run(
            DagsterRun(
                job_name="marts_job", run_id="d" * 36, status=dg.DagsterRunStatus.NOT_STARTED,
                tags={"ledger/marts": "full_refresh"},
            )
        )  # fmt: skip
        assert pending_marts_coverage(instance)(OLDER)


def test_nearby_days_share_one_range_run() -> None:
    days = [date(2026, 11, 3), date(2026, 11, 9), date(2026, 11, 14), OLD]
    changes = [change(day, None, f"0/{i}", i) for i, day in enumerate(days, start=1)]
    requests = late_run_requests(changes, date(2026, 11, 23), lambda day: False)
    assert len(requests) == 2
    far, near = sorted(requests, key=lambda r: r.tags["ledger/partitions"])
    assert near.partition_key is None
    assert near.partition_key_range == dg.PartitionKeyRange("2026-11-03", "2026-11-14")
    assert far.partition_key == OLD.isoformat()


def test_no_new_runs_while_the_last_ticks_runs_wait() -> None:
    # A demo delivering late disputes on scattered old days queued a dozen marts runs; a tick
    # now waits for its earlier runs to start, and reads the changes later (cursor unchanged).
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=lake_asset_key("stripe_charges"),
                partition=dg.MultiPartitionKey({"date": OLD.isoformat(), "tenant": "1"}),
            )
        )
        instance.add_run(
            DagsterRun(
                job_name="marts_job", run_id="e" * 36, status=dg.DagsterRunStatus.NOT_STARTED,
                tags={TRIGGER_TAG: LATE_ARRIVAL, "dagster/partition": OLDER.isoformat()},
            )
        )  # fmt: skip
        context = dg.build_sensor_context(instance=instance, resources=NO_WAIT)
        waiting = late_arrivals_sensor(context)
        assert isinstance(waiting, dg.SensorResult)
        assert not waiting.run_requests
        assert "still waiting" in (waiting.skip_reason.skip_message or "")  # type: ignore[union-attr]
        assert waiting.cursor is None
    with dg.instance_for_test() as instance:  # the same change with no run waiting: read on
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=lake_asset_key("stripe_charges"),
                partition=dg.MultiPartitionKey({"date": OLD.isoformat(), "tenant": "1"}),
            )
        )
        tick = late_arrivals_sensor(dg.build_sensor_context(instance=instance, resources=NO_WAIT))
        assert isinstance(tick, dg.SensorResult)
        assert "first full marts build" in (tick.skip_reason.skip_message or "")  # type: ignore[union-attr]


def report_change(instance: dg.DagsterInstance, day: date) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=lake_asset_key("stripe_charges"),
            partition=dg.MultiPartitionKey({"date": day.isoformat(), "tenant": "1"}),
            metadata={DISPUTES_KEY: "dp_late"},
        )
    )


def test_a_tick_watches_for_the_late_change_and_returns_as_it_lands() -> None:
    # The daemon starts a tick only every 5 s; a tick that watches the event log sees an apply
    # run's materializations when they are written, instead of at the next tick.
    with dg.instance_for_test() as instance:
        instance.add_run(
            DagsterRun(
                job_name="marts_job", run_id="f" * 36, status=dg.DagsterRunStatus.SUCCESS,
                tags={"ledger/marts": "full_refresh"},
            )
        )  # fmt: skip
        today = datetime.now(UTC).date()
        report_change(instance, today)  # today's partition: the schedule's, not this sensor's
        later = threading.Timer(0.5, report_change, (instance, OLD))
        watching = {"sensor_wait": SensorWaitResource(seconds=30, poll_seconds=0.05)}
        started = time.monotonic()
        later.start()
        try:
            context = dg.build_sensor_context(instance=instance, resources=watching)
            tick = late_arrivals_sensor(context)
        finally:
            later.join()
        assert time.monotonic() - started < 15  # it returned on the change, not at 30 s
        assert isinstance(tick, dg.SensorResult)
        assert [r.partition_key for r in tick.run_requests or []] == [OLD.isoformat()]
        assert (tick.run_requests or [])[0].tags[TRIGGER_TAG] == LATE_ARRIVAL
        assert (tick.run_requests or [])[0].tags["ledger/dispute"] == "dp_late"

        # Only today's partitions changed: the tick watches to its end and moves the cursor
        # past them, so the next tick does not look at them again.
        report_change(instance, today)
        quiet = {"sensor_wait": SensorWaitResource(seconds=0.3, poll_seconds=0.05)}
        idle = late_arrivals_sensor(
            dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources=quiet)
        )
        assert isinstance(idle, dg.SensorResult)
        assert not idle.run_requests
        assert idle.cursor is not None
        assert int(idle.cursor) > int(tick.cursor or 0)
