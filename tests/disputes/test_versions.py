"""Partition versions: a replaced partition is kept; the lake reads as of a watermark."""

import os
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ledger_assets.lib.cdc.lsn import Lsn
from ledger_assets.lib.lake.layout import LakeLayout, PartitionKey
from ledger_assets.lib.lake.pins import PinSet
from ledger_assets.lib.lake.reader import create_lake_view
from ledger_assets.lib.lake.schema import LakeTable
from ledger_assets.lib.lake.store import parquet_bytes, write_partition
from ledger_assets.lib.lake.sync import LakeState, write_lake_state
from ledger_assets.lib.lake.versions import (
    RETENTION_DAYS,
    VersionExpiredError,
    create_lake_view_as_of,
    mark_published,
    prune_versions,
    stored_versions,
    versions_as_of,
)
from ledger_assets.lib.marts.prepare import (
    LakeNotReadyError,
    create_persistent_lake_view,
    prepare_marts_database,
)
from ledger_assets.lib.sor.catalog import MirroredTable

TABLE = LakeTable(
    MirroredTable("stripe_charges", "id", "created", "instant"),
    pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("tenant_id", pa.int32(), nullable=False),
            pa.field("amount", pa.int64(), nullable=False),
            pa.field("created", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    ),
)
OLD_DAY, NEW_DAY = date(2025, 8, 1), date(2026, 11, 1)


def rows(day: date, *charges: tuple[str, int, int]) -> pa.Table:
    """Charges of tenant 1 on ``day``: (id, amount, _lsn)."""
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return pa.table(
        {
            "id": [c[0] for c in charges],
            "tenant_id": pa.array([1] * len(charges), pa.int32()),
            "amount": [c[1] for c in charges],
            "created": pa.array([at] * len(charges), pa.timestamp("us", tz="UTC")),
            "local_date": pa.array([day] * len(charges), pa.date32()),
            "_lsn": [c[2] for c in charges],
        }
    )


def at_watermark(layout: LakeLayout, lsn: int) -> None:
    """The lake reaches ``lsn`` and a report is published from it."""
    write_lake_state(layout, LakeState(applied_end=Lsn(lsn), seeded_lsn=Lsn(1)))
    mark_published(layout, time.time_ns())


def snapshot(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[object, ...]]:
    return con.execute(f"select id, amount, local_date from {view} order by id").fetchall()


@pytest.fixture
def layout(tmp_path: Path) -> LakeLayout:
    layout = LakeLayout(tmp_path / "lake")
    # A seeded base file for the old day (two tenants), as the snapshot writes it.
    base = layout.base_file(TABLE.name, OLD_DAY)
    other = rows(OLD_DAY, ("ch_x", 7, 0)).set_column(1, "tenant_id", pa.array([2], pa.int32()))
    seeded = pa.concat_tables([rows(OLD_DAY, ("ch_a", 100, 0), ("ch_b", 200, 0)), other])
    base.write_bytes(parquet_bytes(seeded.cast(TABLE.schema)))
    return layout


def test_reading_as_of_a_watermark_reproduces_every_earlier_state(layout: LakeLayout) -> None:
    key_old = PartitionKey(TABLE.name, 1, OLD_DAY)
    key_new = PartitionKey(TABLE.name, 1, NEW_DAY)
    con = duckdb.connect()
    at_watermark(layout, 1000)
    before = snapshot(con, create_lake_view(con, layout, TABLE, name="v1000"))
    # Batch (1000, 2000]: a new charge today, and ch_a of the old day changes (a dispute).
    assert write_partition(layout, TABLE, key_new, rows(NEW_DAY, ("ch_c", 300, 1500))).changed
    assert write_partition(
        layout, TABLE, key_old, rows(OLD_DAY, ("ch_a", 90, 1600), ("ch_b", 200, 0))
    ).changed
    at_watermark(layout, 2000)
    middle = snapshot(con, create_lake_view(con, layout, TABLE, name="v2000"))
    # Batch (2000, 3000]: ch_b of the old day changes too; re-writing equal content keeps nothing.
    third = rows(OLD_DAY, ("ch_a", 90, 1600), ("ch_b", 150, 2500))
    write = write_partition(layout, TABLE, key_old, third)
    assert (write.changed, write.lsns) == (True, (1600, 2500))
    assert not write_partition(layout, TABLE, key_old, third).changed
    at_watermark(layout, 3000)
    now = snapshot(con, create_lake_view(con, layout, TABLE, name="v3000"))
    assert len({tuple(before), tuple(middle), tuple(now)}) == 3

    versions = [(v.key.local_date, int(v.watermark)) for v in stored_versions(layout, TABLE.name)]
    # The new day's version is its (empty) content before it existed.
    assert versions == [(OLD_DAY, 1000), (OLD_DAY, 2000), (NEW_DAY, 1000)]
    marts = layout.root.parent / "marts.duckdb"
    for watermark, expected in ((1000, before), (1500, middle), (2000, middle), (3000, now)):
        view = create_lake_view_as_of(con, layout, TABLE, Lsn(watermark), name=f"a{watermark}")
        assert snapshot(con, view) == expected, watermark
        # The marts database's view (what dbt reads, from another process) picks the same.
        with duckdb.connect(str(marts)) as db:
            db.execute("create schema if not exists lake")
            kept = versions_as_of(layout, TABLE.name, Lsn(watermark))
            pins = PinSet.create(layout, str(marts))
            create_persistent_lake_view(db, pins, TABLE, "lake", versions=kept)
        with duckdb.connect(str(marts), read_only=True) as db:
            assert snapshot(db, f"lake.{TABLE.name}") == expected, watermark
    # Tenant 2 shares the old day's base file and never changed: it is there at every position.
    assert ("ch_x", 7, OLD_DAY) in snapshot(con, "a1000")


def test_no_versions_while_the_lake_is_seeding(layout: LakeLayout) -> None:
    write_lake_state(layout, LakeState(applied_end=Lsn(10), seeded_lsn=Lsn(20)))
    mark_published(layout, time.time_ns())
    key = PartitionKey(TABLE.name, 1, OLD_DAY)
    assert write_partition(layout, TABLE, key, rows(OLD_DAY, ("ch_a", 1, 15))).changed
    assert stored_versions(layout, TABLE.name) == []


def test_content_no_report_read_is_replaced_without_a_version(layout: LakeLayout) -> None:
    key = PartitionKey(TABLE.name, 1, NEW_DAY)
    write_lake_state(layout, LakeState(applied_end=Lsn(1000), seeded_lsn=Lsn(1)))
    # Nothing published yet: the day's successive states are not kept.
    for n in range(3):
        assert write_partition(layout, TABLE, key, rows(NEW_DAY, ("ch_c", n + 1, 1001))).changed
    assert stored_versions(layout, TABLE.name) == []
    mark_published(layout, time.time_ns())  # a report reads the third state
    assert write_partition(layout, TABLE, key, rows(NEW_DAY, ("ch_c", 9, 1002))).changed
    assert write_partition(layout, TABLE, key, rows(NEW_DAY, ("ch_c", 10, 1003))).changed
    (kept,) = stored_versions(layout, TABLE.name)
    con = duckdb.connect()
    view = create_lake_view_as_of(con, layout, TABLE, Lsn(1000), name="published")
    read = [r for r in snapshot(con, view) if r[0] == "ch_c"]
    assert read == [("ch_c", 3, NEW_DAY)], "what the report read"
    assert kept.key == key


def test_pruning_keeps_the_retention_period_and_then_fails_closed(layout: LakeLayout) -> None:
    key = PartitionKey(TABLE.name, 1, OLD_DAY)
    for n, watermark in enumerate((1000, 2000, 3000)):
        at_watermark(layout, watermark)
        write_partition(layout, TABLE, key, rows(OLD_DAY, ("ch_a", n + 1, watermark + 1)))
    old, middle, recent = stored_versions(layout, TABLE.name)
    day = 86_400
    for version, age_days in ((old, RETENTION_DAYS + 5), (middle, RETENTION_DAYS + 1)):
        stamp = time.time() - age_days * day
        os.utime(version.path, (stamp, stamp))
    report = prune_versions(layout, TABLE.name)
    assert (report.files, report.kept_files) == (2, 1)
    assert report.bytes > 0
    assert report.kept_bytes == recent.path.stat().st_size
    assert stored_versions(layout, TABLE.name) == [recent]
    con = duckdb.connect()
    with pytest.raises(VersionExpiredError, match="pruned"):
        create_lake_view_as_of(con, layout, TABLE, Lsn(2000))
    view = create_lake_view_as_of(con, layout, TABLE, Lsn(2500), name="kept")
    assert snapshot(con, view) == [("ch_a", 2, OLD_DAY), ("ch_x", 7, OLD_DAY)]


def test_marts_as_of_a_position_outside_the_kept_versions_fail_before_building(
    layout: LakeLayout, tmp_path: Path
) -> None:
    key = PartitionKey(TABLE.name, 1, OLD_DAY)
    for n, watermark in enumerate((1000, 2000)):
        at_watermark(layout, watermark)
        write_partition(layout, TABLE, key, rows(OLD_DAY, ("ch_a", n + 1, watermark + 1)))
    at_watermark(layout, 3000)
    (old, _) = stored_versions(layout, TABLE.name)
    stamp = time.time() - (RETENTION_DAYS + 1) * 86_400
    os.utime(old.path, (stamp, stamp))
    assert prune_versions(layout, TABLE.name).files == 1

    def prepare(as_of: int) -> None:
        # Refused before anything is read: the system of record is never reached.
        prepare_marts_database(
            tmp_path / "marts.duckdb", layout, {TABLE.name: TABLE}, "postgresql://nowhere",
            tmp_path / "results", as_of=Lsn(as_of),
        )  # fmt: skip

    with pytest.raises(VersionExpiredError, match="pruned"):
        prepare(1000)
    with pytest.raises(VersionExpiredError, match="seed"):
        prepare(0)
    with pytest.raises(LakeNotReadyError, match="not yet at"):
        prepare(3001)
    assert not (tmp_path / "marts.duckdb").exists()
