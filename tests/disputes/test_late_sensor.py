"""The late-arrivals sensor's requests: one run per touched old day, never a duplicate queue."""

from datetime import date

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from ledger_assets.defs.disputes.sensors import (
    LakeChange,
    late_run_requests,
    pending_marts_coverage,
)

OLD, OLDER, RECENT = date(2026, 7, 1), date(2026, 6, 2), date(2026, 11, 28)


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
