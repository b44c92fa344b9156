"""The late-arrivals sensor's requests: one run per touched old day, never a duplicate queue."""

import threading
import time
from datetime import UTC, date, datetime

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from ledger_assets.defs.disputes.sensors import (
    DISPUTE_PRIORITY,
    LATE_ARRIVAL,
    TRIGGER_TAG,
    LakeChange,
    LateCursor,
    late_arrivals_sensor,
    late_run_requests,
    pending_marts_coverage,
)
from ledger_assets.defs.lake.assets import lake_asset_key
from ledger_assets.defs.lake.jobs import DISPUTES_KEY
from ledger_assets.defs.resources import SensorWaitResource
from ledger_assets.defs.runs import PRIORITY_TAG

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


def report_change(instance: dg.DagsterInstance, day: date, dispute: str | None = None) -> int:
    """A lake materialization of tenant 1's charges on ``day``; its storage id."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=lake_asset_key("stripe_charges"),
            partition=dg.MultiPartitionKey({"date": day.isoformat(), "tenant": "1"}),
            metadata={DISPUTES_KEY: dispute} if dispute else {},
        )
    )
    newest = instance.event_log_storage.get_maximum_record_id()
    assert newest is not None
    return newest


def full_build_done(instance: dg.DagsterInstance) -> None:
    instance.add_run(
        DagsterRun(
            job_name="marts_job", run_id="f" * 36, status=dg.DagsterRunStatus.SUCCESS,
            tags={"ledger/marts": "full_refresh"},
        )
    )  # fmt: skip


def test_while_late_runs_wait_only_a_dispute_gets_a_run_and_the_rest_is_read_later() -> None:
    # A demo delivering late changes on scattered old days queued a dozen marts runs; a tick
    # now waits for its earlier runs to start and reads the changes later (cursor unchanged).
    # A dispute does not wait behind them: its run is requested at once, first in the queue.
    with dg.instance_for_test() as instance:
        full_build_done(instance)
        refund_update = report_change(instance, OLD)
        dispute = report_change(instance, OLDER, "dp_7")
        queued = DagsterRun(
            job_name="marts_job", run_id="e" * 36, status=dg.DagsterRunStatus.NOT_STARTED,
            tags={TRIGGER_TAG: LATE_ARRIVAL, "dagster/partition": "2026-05-01"},
        )  # fmt: skip
        instance.add_run(queued)

        def tick(cursor: str | None) -> dg.SensorResult:
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=NO_WAIT)
            result = late_arrivals_sensor(context)
            assert isinstance(result, dg.SensorResult)
            return result

        first = tick(None)
        [urgent] = first.run_requests or []
        assert urgent.partition_key == OLDER.isoformat()
        assert urgent.tags["ledger/dispute"] == "dp_7"
        assert urgent.tags[PRIORITY_TAG] == DISPUTE_PRIORITY
        assert LateCursor.parse(first.cursor) == LateCursor(None, frozenset({dispute}))

        second = tick(first.cursor)  # still waiting, nothing new: nothing more
        assert not second.run_requests
        assert "still waiting" in (second.skip_reason.skip_message or "")  # type: ignore[union-attr]
        assert second.cursor == first.cursor

        instance.delete_run(queued.run_id)  # it started: the rest is read now, and only it
        third = tick(second.cursor)
        [rest] = third.run_requests or []
        assert rest.partition_key == OLD.isoformat()
        assert rest.tags["ledger/dispute"] == "none"
        assert PRIORITY_TAG not in rest.tags
        assert LateCursor.parse(third.cursor) == LateCursor(max(refund_update, dispute))
    with dg.instance_for_test() as instance:  # no full build yet: nothing to correct
        report_change(instance, OLD)
        tick = late_arrivals_sensor(dg.build_sensor_context(instance=instance, resources=NO_WAIT))
        assert isinstance(tick, dg.SensorResult)
        assert "first full marts build" in (tick.skip_reason.skip_message or "")  # type: ignore[union-attr]
        assert LateCursor.parse(tick.cursor) == LateCursor()


def test_a_tick_watches_for_the_late_change_and_returns_as_it_lands() -> None:
    # The daemon starts a tick only every 5 s; a tick that watches the event log sees an apply
    # run's materializations when they are written, instead of at the next tick.
    with dg.instance_for_test() as instance:
        full_build_done(instance)
        today = datetime.now(UTC).date()
        report_change(instance, today)  # today's partition: the schedule's, not this sensor's
        later = threading.Timer(0.5, report_change, (instance, OLD, "dp_late"))
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
        before, after = LateCursor.parse(tick.cursor).after, LateCursor.parse(idle.cursor).after
        assert before is not None
        assert after is not None
        assert after > before
